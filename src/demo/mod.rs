//! `understudy demo`: a local cluster of node processes under load, with a fault injected
//! every few seconds, and a summary of what the callers saw.
//!
//! The demo starts the nodes as child processes of this binary on free loopback ports, waits
//! for the key-value unit `kv` to serve with a ready standby, and drives `incr` stimuli on a
//! set of keys at a steady rate through the seed node (the gateway). Every `fault_every` it
//! faults `kv`'s primary: its node (`kill -9` and a restart, or `SIGSTOP` and `SIGCONT`; a
//! planned switchover first moves the primary off the gateway) or its handler (a panic), and
//! measures the failover: from the fault until the standby serves at the next epoch. The node
//! faulted may run the group manager too: it moves with the group's Raft leadership. At the end it reads
//! every key and compares it with the increments acknowledged: `lost` counts acknowledged
//! increments missing, `duplicates` increments applied more than once. Every child process is
//! stopped on exit, on an error and on Ctrl-C.

pub mod in_process;
pub mod load;

use crate::testkit::ProcessCluster;
use load::{verify, IncrLoad};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use understudy_cluster::probe::Probe;
use understudy_cluster::wire::WireAsk;
use understudy_runtime::{CopyId, NodeName, UnitName};

/// How many keys the load spreads its increments over.
const KEYS: usize = 16;

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
    /// kv's replication strategy: `sync` (or `synchronous`) or `trailing`.
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
    /// kv's replication strategy.
    pub strategy: String,
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Stimuli sent.
    pub stimuli_sent: u64,
    /// Answered with a result.
    pub answered_ok: u64,
    /// Answered with a result within `T_max` of being sent.
    pub within_t_max: u64,
    /// Acknowledged increments missing from the final state.
    pub lost: u64,
    /// Increments applied more often than acknowledged.
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
        "inflight" => Err(DemoError::Options(
            "--strategy inflight is not available in this release; use sync or trailing".into(),
        )),
        other => Err(DemoError::Options(format!(
            "--strategy {other} is not a strategy; use sync or trailing"
        ))),
    }
}

/// The demo's units file: kv with the strategy asked for, and the ledger.
fn units_file(strategy: &str) -> Result<PathBuf, DemoError> {
    let dir = std::env::temp_dir().join(format!("understudy-demo-{}", std::process::id()));
    let path = dir.join("units.toml");
    let text = format!(
        "[[units]]\nname = \"kv\"\nkind = \"kv\"\nstrategy = \"{strategy}\"\nt_max_ms = 2000\n\n\
         [[units]]\nname = \"ledger\"\nkind = \"ledger\"\nt_max_ms = 2000\n"
    );
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&path, text))
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
    let units = units_file(strategy)?;
    let mut cluster = ProcessCluster::builder(&opts.binary)
        .nodes(&refs)
        .seed(&seed)
        .cookie(&cookie)
        .config(&units)
        .start()
        .map_err(|e| cluster_err(&e))?;
    let addr = cluster.addr(&seed).map_err(|e| cluster_err(&e))?;
    let probe = Arc::new(
        Probe::connect(&addr, &cookie, Duration::from_secs(20))
            .await
            .map_err(|e| cluster_err(&e))?,
    );
    let seed = NodeName::new(&seed);
    eprintln!(
        "demo: {} nodes started ({}), waiting for kv to serve",
        opts.nodes,
        names.join(", ")
    );
    let mut kv = kv_state(&probe, &seed, 0, Duration::from_secs(30))
        .await
        .ok_or_else(|| {
            DemoError::Cluster("kv did not serve with a ready standby within 30 s".into())
        })?;
    let t_max = crate::units::KeyValue::default().budget.t_max();

    // The load.
    let load = IncrLoad::start(
        probe.clone(),
        seed.clone(),
        "kv",
        "k",
        KEYS,
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
            turn += 1;
            if let Some(record) = inject(&mut cluster, &probe, &seed, &mut kv, kind, started).await
            {
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
    // every acknowledged increment shows, for at most T_max.
    let replayed = Instant::now();
    let (lost, duplicates) = loop {
        let (lost, duplicates) = verify(&probe, &seed, "kv", "k", &totals.acked)
            .await
            .map_err(|e| cluster_err(&e))?;
        if lost == 0 || replayed.elapsed() > t_max {
            break (lost, duplicates);
        }
        tokio::time::sleep(Duration::from_millis(20)).await; // poll with a deadline
    };
    let _ = std::fs::remove_file(&units);
    let failover: Vec<f64> = faults.iter().filter_map(|f| f.failover_ms).collect();
    Ok(DemoSummary {
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
        t_max_ms: u64::try_from(t_max.as_millis()).unwrap_or(u64::MAX),
        faults,
    })
}

/// kv's primary node, copy and epoch, once it serves at an epoch above `newer_than` with a
/// ready standby; `None` after `limit`.
#[derive(Clone, Debug)]
struct KvState {
    node: NodeName,
    copy: CopyId,
    epoch: u64,
}

async fn kv_state(
    probe: &Probe,
    seed: &NodeName,
    newer_than: u64,
    limit: Duration,
) -> Option<KvState> {
    let kv = crate::testkit::wait_for_unit(probe, seed, "kv", newer_than, limit).await?;
    let (copy, node) = kv.primary?;
    Some(KvState {
        node,
        copy,
        epoch: kv.epoch.0,
    })
}

/// Fault kv's primary (its node, or its handler) and measure the failover; bring the node
/// back afterwards. The node the load goes through (`gateway`) is never crashed or stopped
/// (its clients' outcomes would be unknown): if kv's primary is there, a planned switchover
/// moves it first. Any node may run the group manager, the gateway included.
async fn inject(
    cluster: &mut ProcessCluster,
    probe: &Probe,
    gateway: &NodeName,
    kv: &mut KvState,
    kind: FaultKind,
    started: Instant,
) -> Option<FaultRecord> {
    if &kv.node == gateway && kind != FaultKind::Panic {
        let moved = probe
            .operate(WireAsk::Switchover {
                unit: UnitName::new("kv"),
            })
            .await;
        if let Err(e) = moved {
            eprintln!("\ndemo: could not move kv off the gateway {gateway}: {e}; fault skipped");
            return None;
        }
        *kv = kv_state(probe, gateway, kv.epoch, Duration::from_secs(30)).await?;
    }
    let victim = kv.node.clone();
    let at_s = started.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let name = match kind {
        FaultKind::Hang => {
            cluster.signal(&victim.0, "STOP").ok()?;
            "hang"
        }
        FaultKind::Panic => {
            probe
                .inject_panic(&victim, &UnitName::new("kv"), kv.copy)
                .ok()?;
            "panic"
        }
        _ => {
            cluster.kill9(&victim.0);
            "crash"
        }
    };
    let after = kv_state(probe, gateway, kv.epoch, Duration::from_secs(30)).await;
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
    if let Some(a) = after {
        *kv = a;
    }
    Some(FaultRecord {
        at_s,
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
    println!(
        "Understudy demo: {} nodes, {:?} at {} stimuli/s, fault {:?} every {:?}, {}",
        s.nodes, opts.duration, opts.rate, opts.fault, opts.fault_every, s.strategy
    );
    let rows = [
        ("stimuli sent", s.stimuli_sent.to_string()),
        ("answered ok", s.answered_ok.to_string()),
        (
            &format!("within T_max ({} ms)", s.t_max_ms),
            s.within_t_max.to_string(),
        ),
        ("lost", s.lost.to_string()),
        ("duplicates", s.duplicates.to_string()),
        ("ignored", s.ignored.to_string()),
        ("failed", s.failed.to_string()),
        ("missed T_max", s.missed_t_max.to_string()),
        ("shed (load limit)", s.shed.to_string()),
        (
            "one primary per epoch",
            format!(
                "{}  ({} epochs answered; two copies in one epoch {}, older epoch after newer {})",
                if s.primaries.holds() { "yes" } else { "NO" },
                s.primaries.epochs,
                s.primaries.epochs_with_two_primaries,
                s.primaries.stale_answers
            ),
        ),
        (
            "failovers",
            format!(
                "{}  (p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms)",
                s.failovers, s.failover_ms.p50, s.failover_ms.p99, s.failover_ms.max
            ),
        ),
    ];
    for (k, v) in rows {
        println!("  {k:<24} {v}");
    }
    for f in &s.faults {
        let took = f
            .failover_ms
            .map(|m| format!("{m:.0} ms"))
            .unwrap_or_else(|| "did not complete".into());
        println!(
            "  at {:>5.1} s  {:<5} {:<4} failover {took}",
            f.at_s, f.kind, f.node
        );
    }
}
