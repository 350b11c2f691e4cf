//! `understudy demo`: a local cluster of node processes under load, with a fault injected
//! every few seconds, and a summary of what the callers saw.
//!
//! The demo starts the nodes as child processes of this binary on free loopback ports, waits
//! for the cluster to be ready (every unit serving with a ready standby), and drives a steady
//! load through the seed node (the gateway) into one of three example applications
//! ([`Example`]), every unit of it replicated with the strategy asked for:
//!
//! ```text
//! kv        incr ──▶ kv                                      faulted: kv
//! pipeline  incr ──▶ intake ──call──▶ enrich ──call──▶ tally  faulted: enrich
//! ledger    transfer ──▶ ledger-a ──Deposit/Withdraw──▶ ledger-b
//!                                                  faulted: ledger-a, ledger-b in turn
//! ```
//!
//! Every `fault_every` it faults the primary of a faulted unit: its node (`kill -9` and a
//! restart, or `SIGSTOP` and `SIGCONT`; a planned switchover first moves the primary off the
//! gateway) or its handler (a panic), and measures the failover: from the fault until the
//! standby serves at the next epoch. The node faulted may run the group manager and other
//! units' copies too: they fail over with it. At the end it reads the final state and compares
//! it with what was acknowledged: `lost` counts acknowledged changes missing, `duplicates`
//! changes applied more than once (for `kv` and `pipeline` increments per key, read from `kv`
//! or `tally`; for `ledger` the debits and credits of each account, and the total of both
//! units, which transfers never change). Every child process is stopped on exit, on an error
//! and on Ctrl-C.

pub mod in_process;
pub mod load;

use crate::testkit::ProcessCluster;
use load::{verify, IncrLoad, Stimuli, TransferPlan};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use understudy_cluster::probe::Probe;
use understudy_cluster::wire::WireAsk;
use understudy_runtime::{CopyId, NodeName, UnitName};

/// How many keys the load spreads its increments over.
const KEYS: usize = 16;
/// The budget (`T_max`) of every stimulus, as the demo's units file declares it.
const T_MAX_MS: u64 = 2000;
/// The split ledger's pairs of accounts per direction (four accounts per pair).
const LEDGER_PAIRS: usize = 4;
/// Every ledger account's opening balance: more than any run can move out of it.
const OPENING: i64 = 1_000_000_000;

/// Which example application the demo runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Example {
    /// The key-value unit `kv`: increments into it, its primary faulted.
    Kv,
    /// A chain of units (the patent's Fig. 2A): stages `intake` → `enrich` → kv unit `tally`;
    /// increments into `intake`, the primary of the middle unit `enrich` faulted, the counts
    /// read from `tally`.
    Pipeline,
    /// A ledger split over `ledger-a` (which calls `ledger-b`) and `ledger-b`: transfers
    /// across the two through `ledger-a`, the two primaries faulted in turn, every balance and
    /// the total read from both.
    Ledger,
}

impl Example {
    /// The stimuli per second `--rate` defaults to. A unit that calls another serves nothing
    /// else while its call is out, so the chains take far fewer than `kv` alone.
    pub fn default_rate(self) -> u32 {
        match self {
            Example::Kv => 2000,
            Example::Pipeline | Example::Ledger => 400,
        }
    }

    /// Its name on the command line and in the summary.
    pub fn name(self) -> &'static str {
        match self {
            Example::Kv => "kv",
            Example::Pipeline => "pipeline",
            Example::Ledger => "ledger",
        }
    }

    /// The unit the load goes to.
    fn entry(self) -> &'static str {
        match self {
            Example::Kv => "kv",
            Example::Pipeline => "intake",
            Example::Ledger => "ledger-a",
        }
    }

    /// The units whose primaries are faulted, in turn.
    fn faulted(self) -> &'static [&'static str] {
        match self {
            Example::Kv => &["kv"],
            Example::Pipeline => &["enrich"],
            Example::Ledger => &["ledger-a", "ledger-b"],
        }
    }

    /// The entries of its units file: (name, kind, replicated with the strategy asked for,
    /// the units it calls).
    fn units(self) -> &'static [(&'static str, &'static str, bool, &'static [&'static str])] {
        match self {
            // kv's file also houses the ledger, as the nodes do without a file.
            Example::Kv => &[("kv", "kv", true, &[]), ("ledger", "ledger", false, &[])],
            Example::Pipeline => &[
                ("intake", "stage", true, &["enrich"]),
                ("enrich", "stage", true, &["tally"]),
                ("tally", "kv", true, &[]),
            ],
            Example::Ledger => &[
                ("ledger-a", "ledger", true, &["ledger-b"]),
                ("ledger-b", "ledger", true, &[]),
            ],
        }
    }
}

/// Which fault the demo injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    /// `kill -9` of the primary's node, then a restart of it.
    Crash,
    /// `SIGSTOP` of the primary's node past the detection time, then `SIGCONT`.
    Hang,
    /// A panic inside the primary's handler.
    Panic,
    /// Crash, hang and panic in turn.
    Mixed,
    /// No fault: the load alone.
    None,
}

/// How to run the demo.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Which example application runs.
    pub example: Example,
    /// Nodes in the cluster (at least 3, so that the group keeps a majority when one is lost).
    pub nodes: usize,
    /// How long the load runs.
    pub duration: Duration,
    /// Stimuli per second.
    pub rate: u32,
    /// Which fault to inject.
    pub fault: FaultKind,
    /// How often.
    pub fault_every: Duration,
    /// The replication strategy of every unit of the example: `sync` (or `synchronous`),
    /// `trailing` or `inflight` (synchronous with in-flight knowledge).
    pub strategy: String,
    /// Print the summary as one JSON object (the last line) instead of a table.
    pub json: bool,
    /// The node binary (normally this very program).
    pub binary: PathBuf,
}

/// The 50th and 99th percentile and the maximum of a set of durations, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

impl Percentiles {
    fn of(mut ms: Vec<f64>) -> Percentiles {
        if ms.is_empty() {
            return Percentiles::default();
        }
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
        Percentiles {
            p50: at(0.5),
            p99: at(0.99),
            max: ms[ms.len() - 1],
        }
    }
}

/// One fault the demo injected.
#[derive(Clone, Debug, Serialize)]
pub struct FaultRecord {
    /// Seconds into the load.
    pub at_s: f64,
    /// The unit whose primary was faulted.
    pub unit: String,
    /// What was done.
    pub kind: String,
    /// To which node.
    pub node: String,
    /// From the fault until the standby served at the next epoch; `None` if it did not within
    /// 30 s.
    pub failover_ms: Option<f64>,
}

/// What the demo measured.
#[derive(Clone, Debug, Serialize)]
pub struct DemoSummary {
    /// The example application that ran.
    pub example: Example,
    /// The replication strategy of its units.
    pub strategy: String,
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Stimuli sent.
    pub stimuli_sent: u64,
    /// Answered with a result.
    pub answered_ok: u64,
    /// Answered with a result within `T_max` of being sent.
    pub within_t_max: u64,
    /// Acknowledged changes missing from the final state: increments (read from `kv` or
    /// `tally`), or debits and credits of the ledger's accounts.
    pub lost: u64,
    /// Changes applied more often than acknowledged (for the ledger: beyond every transfer
    /// that could have made them, those with an unknown outcome included).
    pub duplicates: u64,
    /// Stimuli the unit reported as ignored.
    pub ignored: u64,
    /// Stimuli that failed otherwise (their budget ran out, the unit was unavailable).
    pub failed: u64,
    /// Stimuli whose outcome (an answer or an error) came after their `T_max`.
    pub missed_t_max: u64,
    /// Stimuli not sent because `MAX_IN_FLIGHT` were already waiting.
    pub shed: u64,
    /// Who answered: one primary per epoch, one epoch after another.
    pub primaries: crate::testkit::PrimaryCheck,
    /// Failovers measured.
    pub failovers: u64,
    /// Their durations.
    pub failover_ms: Percentiles,
    /// The budget of each stimulus.
    pub t_max_ms: u64,
    /// Every fault injected.
    pub faults: Vec<FaultRecord>,
    /// The ledger: the sum of every balance of both units once the accounts were opened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_before: Option<i64>,
    /// The ledger: the sum at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_after: Option<i64>,
    /// The ledger: no money was created or destroyed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_unchanged: Option<bool>,
}

/// Why the demo stopped early.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// An option cannot be honoured.
    #[error("{0}")]
    Options(String),
    /// The cluster did not come up or stopped answering.
    #[error("{0}")]
    Cluster(String),
    /// Ctrl-C.
    #[error("interrupted")]
    Interrupted,
}

/// Run the demo; print progress to stderr and the summary to stdout.
pub async fn run(opts: DemoOptions) -> Result<DemoSummary, DemoError> {
    if opts.nodes < 3 {
        return Err(DemoError::Options(
            "--nodes must be at least 3 (a group of two cannot lose a node and keep a majority)"
                .into(),
        ));
    }
    strategy_of(&opts.strategy)?;
    tokio::select! {
        r = run_inner(&opts) => r,
        _ = tokio::signal::ctrl_c() => Err(DemoError::Interrupted),
    }
}

/// The `units.toml` spelling of a `--strategy`, or why it cannot be used.
fn strategy_of(name: &str) -> Result<&'static str, DemoError> {
    match name {
        "sync" | "synchronous" => Ok("synchronous"),
        "trailing" => Ok("trailing"),
        "inflight" => Ok("inflight"),
        other => Err(DemoError::Options(format!(
            "--strategy {other} is not a strategy; use sync, trailing or inflight"
        ))),
    }
}

/// The demo's units file: the example's units, with the strategy asked for.
fn units_file(example: Example, strategy: &str) -> Result<PathBuf, DemoError> {
    let dir = std::env::temp_dir().join(format!("understudy-demo-{}", std::process::id()));
    let path = dir.join("units.toml");
    let entries: Vec<String> = example
        .units()
        .iter()
        .map(|(name, kind, replicated, calls)| {
            let mut entry = format!("[[units]]\nname = \"{name}\"\nkind = \"{kind}\"\n");
            if *replicated {
                entry += &format!("strategy = \"{strategy}\"\n");
            }
            if !calls.is_empty() {
                let calls: Vec<String> = calls.iter().map(|c| format!("\"{c}\"")).collect();
                entry += &format!("calls = [{}]\n", calls.join(", "));
            }
            entry + &format!("t_max_ms = {T_MAX_MS}\n")
        })
        .collect();
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&path, entries.join("\n")))
        .map_err(|e| DemoError::Cluster(format!("cannot write {}: {e}", path.display())))?;
    Ok(path)
}

async fn run_inner(opts: &DemoOptions) -> Result<DemoSummary, DemoError> {
    let names: Vec<String> = (1..=opts.nodes).map(|i| format!("n{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let seed = names[names.len() - 1].clone();
    let cookie = format!("demo-{}", std::process::id());
    let cluster_err = |e: &dyn std::fmt::Display| DemoError::Cluster(e.to_string());
    let strategy = strategy_of(&opts.strategy)?;
    let example = opts.example;
    let units = units_file(example, strategy)?;
    let mut cluster = ProcessCluster::builder(&opts.binary)
        .nodes(&refs)
        .seed(&seed)
        .cookie(&cookie)
        .config(&units)
        .start()
        .map_err(|e| cluster_err(&e))?;
    let unit_names: Vec<&str> = example.units().iter().map(|u| u.0).collect();
    eprintln!(
        "demo: {} nodes started ({}), waiting for {} to serve",
        opts.nodes,
        names.join(", "),
        unit_names.join(", ")
    );
    // Every unit serves with a ready standby, and every node resolves every unit (a unit
    // calls the next through its own node).
    let probe = Arc::new(
        cluster
            .ready(Duration::from_secs(45))
            .await
            .map_err(|e| cluster_err(&e))?,
    );
    let seed = NodeName::new(&seed);
    let t_max = Duration::from_millis(T_MAX_MS);

    // The load.
    let plan = TransferPlan {
        local: "ledger-a".into(),
        remote: "ledger-b".into(),
        pairs: LEDGER_PAIRS,
        opening: OPENING,
    };
    let stimuli = match example {
        Example::Kv | Example::Pipeline => Stimuli::Incr {
            prefix: "k".into(),
            keys: KEYS,
        },
        Example::Ledger => {
            plan.open(&probe, &seed, t_max)
                .await
                .map_err(|e| cluster_err(&e))?;
            Stimuli::Transfers(plan.clone())
        }
    };
    let total_before = match example {
        Example::Ledger => Some(
            plan.total(&probe, &seed)
                .await
                .map_err(|e| cluster_err(&e))?,
        ),
        _ => None,
    };
    let load = IncrLoad::start_stimuli(
        probe.clone(),
        seed.clone(),
        example.entry(),
        stimuli,
        opts.rate,
        t_max,
    );
    let started = Instant::now();
    let mut faults = Vec::new();
    let mut next_fault = started + opts.fault_every;
    let mut next_progress = started;
    let mut turn = 0usize;
    while started.elapsed() < opts.duration {
        if Instant::now() >= next_progress {
            load.progress(started, faults.len());
            next_progress += Duration::from_millis(500);
        }
        if opts.fault != FaultKind::None && Instant::now() >= next_fault {
            let kind = match opts.fault {
                FaultKind::Mixed => [FaultKind::Crash, FaultKind::Hang, FaultKind::Panic][turn % 3],
                other => other,
            };
            let faulted = example.faulted();
            let unit = faulted[turn % faulted.len()];
            turn += 1;
            if let Some(record) = inject(&mut cluster, &probe, &seed, unit, kind, started).await {
                faults.push(record);
            }
            next_fault = Instant::now() + opts.fault_every;
        }
        tokio::time::sleep(Duration::from_millis(20)).await; // the demo's own pace
    }
    load.progress(started, faults.len());
    let totals = load.finish().await;
    eprintln!();

    // Compare the final state with what was acknowledged. Under the trailing strategy the
    // gateway's client may still be replaying what a lost standby lacked: read again until
    // every acknowledged change shows (and, for the ledger, the total is back), for at most
    // T_max.
    let replayed = Instant::now();
    let (lost, duplicates, total_after) = loop {
        let (lost, duplicates, total) = match example {
            Example::Kv | Example::Pipeline => {
                let last = if example == Example::Kv {
                    "kv"
                } else {
                    "tally"
                };
                let (lost, duplicates) = verify(&probe, &seed, last, "k", &totals.acked)
                    .await
                    .map_err(|e| cluster_err(&e))?;
                (lost, duplicates, None)
            }
            Example::Ledger => {
                let (lost, duplicates) = plan
                    .verify(&probe, &seed, &totals.acked, &totals.unknown)
                    .await
                    .map_err(|e| cluster_err(&e))?;
                let total = plan
                    .total(&probe, &seed)
                    .await
                    .map_err(|e| cluster_err(&e))?;
                (lost, duplicates, Some(total))
            }
        };
        let settled = lost == 0 && total == total_before;
        if settled || replayed.elapsed() > t_max {
            break (lost, duplicates, total);
        }
        tokio::time::sleep(Duration::from_millis(20)).await; // poll with a deadline
    };
    let _ = std::fs::remove_file(&units);
    let failover: Vec<f64> = faults.iter().filter_map(|f| f.failover_ms).collect();
    Ok(DemoSummary {
        example,
        strategy: strategy.to_string(),
        nodes: opts.nodes,
        stimuli_sent: totals.stimuli_sent,
        answered_ok: totals.answered_ok,
        within_t_max: totals.within_t_max,
        lost,
        duplicates,
        ignored: totals.ignored,
        missed_t_max: totals.missed_t_max,
        failed: totals.failed,
        shed: totals.shed,
        primaries: totals.primaries,
        failovers: failover.len() as u64,
        failover_ms: Percentiles::of(failover),
        t_max_ms: T_MAX_MS,
        faults,
        total_before,
        total_after,
        total_unchanged: total_before.zip(total_after).map(|(b, a)| b == a),
    })
}

/// A unit's primary node, copy and epoch.
#[derive(Clone, Debug)]
struct PrimaryAt {
    node: NodeName,
    copy: CopyId,
    epoch: u64,
}

/// `unit`'s primary once it serves at an epoch above `newer_than` with a ready standby, in the
/// table `observer` holds; `None` after `limit`.
async fn primary_at(
    probe: &Probe,
    observer: &NodeName,
    unit: &str,
    newer_than: u64,
    limit: Duration,
) -> Option<PrimaryAt> {
    let status = crate::testkit::wait_for_unit(probe, observer, unit, newer_than, limit).await?;
    let (copy, node) = status.primary?;
    Some(PrimaryAt {
        node,
        copy,
        epoch: status.epoch.0,
    })
}

/// Fault `unit`'s primary (its node, or its handler) and measure the failover; bring the node
/// back afterwards. The node the load goes through (`gateway`) is never crashed or stopped
/// (its clients' outcomes would be unknown): if the primary is there, a planned switchover
/// moves it first. Any node may run the group manager, the gateway included.
async fn inject(
    cluster: &mut ProcessCluster,
    probe: &Probe,
    gateway: &NodeName,
    unit: &str,
    kind: FaultKind,
    started: Instant,
) -> Option<FaultRecord> {
    // Where the primary is now: an earlier fault (of this unit, or of a node this unit's
    // copies shared) may have moved it.
    let settle = Duration::from_secs(30);
    let Some(mut primary) = primary_at(probe, gateway, unit, 0, settle).await else {
        eprintln!("\ndemo: {unit} did not serve with a ready standby within 30 s; fault skipped");
        return None;
    };
    if &primary.node == gateway && kind != FaultKind::Panic {
        let moved = probe
            .operate(WireAsk::Switchover {
                unit: UnitName::new(unit),
            })
            .await;
        if let Err(e) = moved {
            eprintln!(
                "\ndemo: could not move {unit} off the gateway {gateway}: {e}; fault skipped"
            );
            return None;
        }
        primary = primary_at(probe, gateway, unit, primary.epoch, settle).await?;
    }
    let victim = primary.node.clone();
    let at_s = started.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let name = match kind {
        FaultKind::Hang => {
            cluster.signal(&victim.0, "STOP").ok()?;
            "hang"
        }
        FaultKind::Panic => {
            probe
                .inject_panic(&victim, &UnitName::new(unit), primary.copy)
                .ok()?;
            "panic"
        }
        _ => {
            cluster.kill9(&victim.0);
            "crash"
        }
    };
    let after = primary_at(probe, gateway, unit, primary.epoch, settle).await;
    let failover_ms = after.as_ref().map(|_| t0.elapsed().as_secs_f64() * 1000.0);
    match kind {
        FaultKind::Hang => {
            let _ = cluster.signal(&victim.0, "CONT");
        }
        FaultKind::Panic => {}
        _ => {
            let _ = cluster.restart(&victim.0);
        }
    }
    Some(FaultRecord {
        at_s,
        unit: unit.to_string(),
        kind: name.to_string(),
        node: victim.0,
        failover_ms,
    })
}

/// Print the summary: a table, or (with `json`) one JSON object as the last line.
pub fn print_summary(opts: &DemoOptions, s: &DemoSummary) {
    if opts.json {
        match serde_json::to_string(s) {
            Ok(line) => println!("{line}"),
            Err(e) => eprintln!("demo: cannot print the summary as JSON: {e}"),
        }
        return;
    }
    let example = match s.example {
        Example::Kv => String::new(),
        other => format!(", example {}", other.name()),
    };
    println!(
        "Understudy demo: {} nodes, {:?} at {} stimuli/s, fault {:?} every {:?}, {}{example}",
        s.nodes, opts.duration, opts.rate, opts.fault, opts.fault_every, s.strategy
    );
    let (lost, duplicates) = match s.example {
        Example::Kv => ("lost", "duplicates"),
        Example::Pipeline => ("lost (on tally)", "duplicates (on tally)"),
        Example::Ledger => ("lost (per account)", "duplicates (per account)"),
    };
    let mut rows = vec![
        ("stimuli sent".to_string(), s.stimuli_sent.to_string()),
        ("answered ok".to_string(), s.answered_ok.to_string()),
        (
            format!("within T_max ({} ms)", s.t_max_ms),
            s.within_t_max.to_string(),
        ),
        (lost.to_string(), s.lost.to_string()),
        (duplicates.to_string(), s.duplicates.to_string()),
    ];
    if let (Some(before), Some(after)) = (s.total_before, s.total_after) {
        rows.push(("total before".into(), before.to_string()));
        rows.push(("total after".into(), after.to_string()));
        let same = if before == after { "yes" } else { "NO" };
        rows.push(("total unchanged".into(), same.to_string()));
    }
    rows.extend([
        ("ignored".to_string(), s.ignored.to_string()),
        ("failed".to_string(), s.failed.to_string()),
        ("missed T_max".to_string(), s.missed_t_max.to_string()),
        ("shed (load limit)".to_string(), s.shed.to_string()),
        (
            "one primary per epoch".to_string(),
            format!(
                "{}  ({} epochs answered; two copies in one epoch {}, older epoch after newer {})",
                if s.primaries.holds() { "yes" } else { "NO" },
                s.primaries.epochs,
                s.primaries.epochs_with_two_primaries,
                s.primaries.stale_answers
            ),
        ),
        (
            "failovers".to_string(),
            format!(
                "{}  (p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms)",
                s.failovers, s.failover_ms.p50, s.failover_ms.p99, s.failover_ms.max
            ),
        ),
    ]);
    for (k, v) in rows {
        println!("  {k:<24} {v}");
    }
    for f in &s.faults {
        let took = f
            .failover_ms
            .map(|m| format!("{m:.0} ms"))
            .unwrap_or_else(|| "did not complete".into());
        // With one faulted unit (kv) the unit goes without saying.
        let unit = match s.example {
            Example::Kv => String::new(),
            _ => format!("{:<9}", f.unit),
        };
        println!(
            "  at {:>5.1} s  {:<5} {:<4} {unit}failover {took}",
            f.at_s, f.kind, f.node
        );
    }
}
