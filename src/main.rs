//! The `understudy` command line.

use clap::{Parser, Subcommand};
use std::time::Duration;
use understudy::api_client::{ApiChange, ApiClient, ApiClientError};
use understudy::cluster::args::NodeArgs;
use understudy::cluster::config::ClusterConfig;
use understudy::cluster::probe::{Probe, ProbeError};
use understudy::cluster::tls::TlsArgs;
use understudy::runtime::{NodeName, UnitName};

/// The cookie nodes present to each other when none is given. Set your own with `--cookie`.
use understudy::cluster::builder::DEV_COOKIE;

/// Understudy: keeps actor-based services answering while actors, processes and machines fail.
#[derive(Debug, Parser)]
#[command(name = "understudy", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a local cluster of node processes, drive load, inject a fault every few seconds,
    /// and print what the callers saw (lost, duplicates, failover times).
    Demo {
        /// Which example application runs: kv (one key-value unit), pipeline (intake → enrich
        /// → tally, enrich faulted) or ledger (split over ledger-a and ledger-b, both faulted
        /// in turn).
        #[arg(long, value_enum, default_value = "kv")]
        example: understudy::demo::Example,
        /// Nodes in the cluster (at least 3).
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Seconds of load.
        #[arg(long, default_value_t = 20)]
        duration: u64,
        /// Stimuli per second [default: 2000 for kv, 400 for pipeline and ledger].
        #[arg(long)]
        rate: Option<u32>,
        /// Which fault to inject.
        #[arg(long, value_enum, default_value = "crash")]
        fault: understudy::demo::FaultKind,
        /// Seconds between faults.
        #[arg(long, default_value_t = 4)]
        fault_every: u64,
        /// The replication strategy of every unit of the example: sync, trailing or inflight
        /// (synchronous with in-flight knowledge).
        #[arg(long, default_value = "sync")]
        strategy: String,
        /// Print the summary as one JSON object, the last line of output.
        #[arg(long)]
        json: bool,
    },
    /// Measure the key-value unit under each strategy against a plain ractor actor: throughput
    /// and p50/p99 latency at 1 and 64 requests in flight, on three local node processes per
    /// strategy; takeover after a crash, a crash of the manager's node, a hang and a panic;
    /// and scale (1,000 units on five nodes: cold start, memory per unit pair, node loss).
    Bench {
        /// A short run (1.5 s per measurement, under a minute in all) instead of 5 s each.
        #[arg(long)]
        quick: bool,
        /// Also print one JSON object, the last line of output.
        #[arg(long)]
        json: bool,
        /// Takeover trials per fault (default 100; 5 with --quick).
        #[arg(long)]
        trials: Option<usize>,
        /// Keep the nodes' logs in this directory (one file per node, per strategy).
        #[arg(long)]
        logs: Option<std::path::PathBuf>,
        /// Run only this part (again for more than one): throughput, takeover or scale.
        #[arg(long, value_enum)]
        only: Vec<understudy::bench::BenchPart>,
    },
    /// Run a unit pair under load inside this one process, kill the primary's node, and print
    /// what happened.
    PairDemo,
    /// Run one node of a cluster in this process, until interrupted.
    Node(NodeArgs),
    /// Print what every node knows: its peers, its time against budgets, and per group the
    /// committed table (units, epochs, primaries and standbys). Asks a node's HTTP API
    /// (`GET /api/status`).
    Status {
        #[command(flatten)]
        api: ApiAddr,
        /// Print one JSON object per node instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Planned switchover of a unit: its primary hands over to its standby, losing nothing.
    /// Asks a node's HTTP API (`POST /api/units/UNIT/switchover`, with the API token).
    Switchover {
        #[command(flatten)]
        api: ApiAddr,
        #[command(flatten)]
        token: ApiTokenArg,
        /// The unit.
        unit: String,
    },
    /// Restore a unit declared unavailable (no copy holding its state was left): it starts
    /// again, empty, at a new epoch. Asks a node's HTTP API (`POST /api/units/UNIT/restore`,
    /// with the API token).
    Restore {
        #[command(flatten)]
        api: ApiAddr,
        #[command(flatten)]
        token: ApiTokenArg,
        /// The unit.
        unit: String,
    },
    /// Release a unit the global manager quarantined (its copies failed on one stimulus): its
    /// callers reach it again. Asks a node's HTTP API (`POST /api/units/UNIT/release`, with
    /// the API token).
    Release {
        #[command(flatten)]
        api: ApiAddr,
        #[command(flatten)]
        token: ApiTokenArg,
        /// The unit.
        unit: String,
    },
    /// Drain a node for maintenance: its primaries hand over, its standbys move elsewhere,
    /// and nothing new is placed on it until it starts again or is readmitted. Asks a node's
    /// HTTP API (`POST /api/nodes/NODE/drain`, with the API token).
    Drain {
        #[command(flatten)]
        api: ApiAddr,
        #[command(flatten)]
        token: ApiTokenArg,
        /// The node to drain.
        node: String,
    },
    /// Readmit a node to placement: one the global manager excluded for failing again and
    /// again, or one drained. It takes copies again. Asks a node's HTTP API
    /// (`POST /api/nodes/NODE/readmit`, with the API token).
    Readmit {
        #[command(flatten)]
        api: ApiAddr,
        #[command(flatten)]
        token: ApiTokenArg,
        /// The node to readmit.
        node: String,
    },
    /// Drive `incr` load on a key-value unit of a running cluster and print what the callers
    /// saw, and per key how many increments were acknowledged.
    Load {
        /// A node of the cluster, as HOST:PORT, to join through (the load goes through the
        /// first node by name).
        #[arg(long)]
        join: String,
        /// The cluster's cookie.
        #[arg(long, default_value = DEV_COOKIE)]
        cookie: String,
        /// TLS, for a cluster that uses it: a certificate signed by the cluster's CA.
        #[command(flatten)]
        tls: TlsArgs,
        /// The key-value unit.
        #[arg(long, default_value = "kv")]
        unit: String,
        /// Stimuli per second.
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        /// Seconds of load.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// How many keys the increments spread over.
        #[arg(long, default_value_t = 16)]
        keys: usize,
        /// Print one JSON object, the last line of output.
        #[arg(long)]
        json: bool,
    },
    /// Send one stimulus, written as JSON, to a unit and print its answer as JSON.
    Call {
        /// A node of the cluster, as HOST:PORT.
        #[arg(long)]
        join: String,
        /// The cluster's cookie.
        #[arg(long, default_value = DEV_COOKIE)]
        cookie: String,
        /// TLS, for a cluster that uses it: a certificate signed by the cluster's CA.
        #[command(flatten)]
        tls: TlsArgs,
        /// The unit's name.
        unit: String,
        /// The stimulus, e.g. '{"Incr":{"key":"hits","by":1}}' for the key-value unit.
        stimulus: String,
    },
}

/// Which node's HTTP API a command asks: `--api` or `--join`, one of them.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
struct ApiAddr {
    /// A node's HTTP API, as http://HOST:PORT (where its --http says it listens).
    #[arg(long, value_name = "URL")]
    api: Option<String>,
    /// A node of the cluster, as HOST:PORT (its cluster address): its API is asked at
    /// http://HOST:PORT+1000, where a node serves it unless its --http says otherwise.
    #[arg(long, value_name = "HOST:PORT")]
    join: Option<String>,
}

impl ApiAddr {
    fn client(&self) -> Result<ApiClient, ApiClientError> {
        ApiClient::new(&ApiClient::base_url(
            self.api.as_deref(),
            self.join.as_deref(),
        )?)
    }
}

/// The token a change needs.
#[derive(Debug, clap::Args)]
struct ApiTokenArg {
    /// The node's API token (the --api-token it was started with).
    #[arg(long, env = "UNDERSTUDY_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> std::process::ExitCode {
    // `RUST_LOG` says what is logged (nothing but errors without it); colours only on a
    // terminal, so that a log file holds plain lines.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo {
            example,
            nodes,
            duration,
            rate,
            fault,
            fault_every,
            strategy,
            json,
        } => {
            demo(understudy::demo::DemoOptions {
                example,
                nodes,
                duration: Duration::from_secs(duration),
                rate: rate.unwrap_or_else(|| example.default_rate()),
                fault,
                fault_every: Duration::from_secs(fault_every),
                strategy,
                json,
                binary: std::env::current_exe().unwrap_or_else(|_| "understudy".into()),
            })
            .await
        }
        Command::Bench {
            quick,
            json,
            trials,
            logs,
            only,
        } => {
            bench(understudy::bench::BenchOptions {
                quick,
                json,
                trials,
                logs,
                only,
                binary: std::env::current_exe().unwrap_or_else(|_| "understudy".into()),
            })
            .await
        }
        Command::PairDemo => understudy::demo::in_process::pair_failover().await,
        Command::Node(args) => run_node(args).await,
        Command::Status { api, json } => status(&api, json).await,
        Command::Call {
            join,
            cookie,
            tls,
            unit,
            stimulus,
        } => call(&join, &cookie, &tls, &unit, &stimulus).await,
        Command::Load {
            join,
            cookie,
            tls,
            unit,
            rate,
            duration,
            keys,
            json,
        } => {
            load(
                &join,
                &cookie,
                &tls,
                &unit,
                rate,
                Duration::from_secs(duration),
                keys,
                json,
            )
            .await
        }
        Command::Switchover { api, token, unit } => {
            let change = ApiChange::Switchover(UnitName::new(unit));
            operate(&api, &token, change).await
        }
        Command::Restore { api, token, unit } => {
            let change = ApiChange::Restore(UnitName::new(unit));
            operate(&api, &token, change).await
        }
        Command::Release { api, token, unit } => {
            let change = ApiChange::Release(UnitName::new(unit));
            operate(&api, &token, change).await
        }
        Command::Drain { api, token, node } => {
            let change = ApiChange::Drain(NodeName::new(node));
            operate(&api, &token, change).await
        }
        Command::Readmit { api, token, node } => {
            let change = ApiChange::Readmit(NodeName::new(node));
            operate(&api, &token, change).await
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("understudy: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

type Outcome = Result<(), Box<dyn std::error::Error>>;

async fn run_node(args: NodeArgs) -> Outcome {
    let builder = args.builder(ClusterConfig::default_embedded())?;
    let node = understudy::units::register(builder).start().await?;
    let http = node
        .http
        .map(|addr| format!(", HTTP API on http://{addr}"))
        .unwrap_or_default();
    println!(
        "node {} listening on {}:{}{http}",
        args.name, args.bind, args.port
    );
    node.serve_until_signal().await;
    Ok(())
}

async fn demo(opts: understudy::demo::DemoOptions) -> Outcome {
    let summary = understudy::demo::run(opts.clone()).await?;
    understudy::demo::print_summary(&opts, &summary);
    if summary.lost > 0 || summary.duplicates > 0 {
        return Err("acknowledged stimuli were lost or applied twice".into());
    }
    if summary.total_unchanged == Some(false) {
        return Err("the ledger's total changed: money was created or destroyed".into());
    }
    Ok(())
}

async fn bench(opts: understudy::bench::BenchOptions) -> Outcome {
    let report = understudy::bench::run(&opts).await?;
    report.print_table();
    if opts.json {
        println!("{}", report.json());
    }
    if !report.complete() {
        return Err("some measurements measured nothing (see the table)".into());
    }
    Ok(())
}

/// A probe of the cluster at `join`, over TLS if the flags say so.
async fn connect(join: &str, cookie: &str, tls: &TlsArgs) -> Result<Probe, ProbeError> {
    let tls = tls.load()?;
    Probe::connect_with_tls(join, cookie, tls.as_ref(), Duration::from_secs(5)).await
}

async fn status(api: &ApiAddr, json: bool) -> Outcome {
    let statuses = api.client()?.status().await?;
    // Per group: the node whose copy of the table is printed (the group manager's if any),
    // whether that node runs the manager, and the units.
    let mut tables: std::collections::BTreeMap<
        String,
        (NodeName, understudy::cluster::control::ControlView),
    > = std::collections::BTreeMap::new();
    // Every node's status, in the order of their names.
    for s in statuses {
        if json {
            println!("{}", serde_json::to_string(&s)?);
            continue;
        }
        let members: Vec<String> = s.members.iter().map(|n| n.0.clone()).collect();
        let c = &s.control;
        println!(
            "node {:<8} group {:<8} raft {:<9} term {:<4} leader {:<8} sees [{}]{}",
            s.node.0,
            s.group,
            c.role,
            c.term,
            c.leader.as_ref().map(|n| n.0.as_str()).unwrap_or("-"),
            members.join(", "),
            if c.runs_group_manager {
                "  <- runs the group manager"
            } else {
                ""
            },
        );
        print_budgets("served", &s.budgets.served, "T_normal");
        print_budgets("called", &s.budgets.called, "T_normal");
        for r in &s.budgets.reconciled {
            println!(
                "  reconciled {:<10} open at takeover: served again {}, ignored {}; calls sent again {}, calls that followed a takeover {}",
                r.unit.0, r.served_again, r.ignored, r.calls_resent, r.calls_redirected
            );
        }
        for view in std::iter::once(c).chain(s.others.iter()) {
            let better = match tables.get(&view.group) {
                None => true,
                Some((_, held)) => view.runs_group_manager && !held.runs_group_manager,
            };
            if better {
                tables.insert(view.group.clone(), (s.node.clone(), view.clone()));
            }
        }
    }
    for (group, (from, view)) in tables {
        let names = |n: &[NodeName]| n.iter().map(|n| n.0.clone()).collect::<Vec<_>>().join(", ");
        println!(
            "group {group} (the committed table, as node {from} holds it): nodes up [{}], Raft voters [{}]",
            names(&view.nodes_up),
            names(&view.voters)
        );
        for (node, why) in &view.excluded {
            println!("  node {node} EXCLUDED from placement ({why}); `understudy readmit {node}` takes it back");
        }
        for u in view.units {
            let copy = |c: &Option<(understudy::runtime::CopyId, NodeName)>| {
                c.as_ref()
                    .map(|(c, n)| format!("{c}@{n}"))
                    .unwrap_or_else(|| "-".into())
            };
            let strategy = view.strategies.get(&u.unit).map_or("-", String::as_str);
            let quarantined = u
                .quarantined
                .as_ref()
                .map(|why| format!(" QUARANTINED ({why})"))
                .unwrap_or_default();
            println!(
                "  {:<10} {:<11} epoch {:<4} primary {:<14} standby {:<14}{}{}{quarantined}",
                u.unit.0,
                strategy,
                u.epoch.0,
                copy(&u.primary),
                copy(&u.standby),
                if u.standby_ready { " ready" } else { "" },
                if u.unavailable { " UNAVAILABLE" } else { "" },
            );
        }
    }
    Ok(())
}

/// One line per unit and stimulus kind: how many, how many over `T_normal` and `T_max`, the
/// mean and the longest.
fn print_budgets(what: &str, rows: &[understudy::runtime::BudgetRow], normal: &str) {
    for r in rows {
        let t = &r.tally;
        let mean_us = t.total_us / t.count.max(1);
        println!(
            "  {what} {:<10} {:<10} {:>8}  over {normal} {:>6}  over T_max {:>6}  mean {:>7.2} ms  max {:>8.2} ms",
            r.unit.0,
            r.kind,
            t.count,
            t.over_normal,
            t.over_max,
            mean_us as f64 / 1000.0,
            t.max_us as f64 / 1000.0,
        );
    }
}

#[allow(clippy::too_many_arguments)]
async fn load(
    join: &str,
    cookie: &str,
    tls: &TlsArgs,
    unit: &str,
    rate: u32,
    duration: Duration,
    keys: usize,
    json: bool,
) -> Outcome {
    use understudy::demo::load::{key, verify, IncrLoad};
    let probe = std::sync::Arc::new(connect(join, cookie, tls).await?);
    let via = probe
        .nodes()
        .into_iter()
        .next()
        .ok_or("no node of the cluster is visible")?;
    // Keys of their own, so that the final values count this run's increments only.
    let prefix = format!(
        "load-{}-{}-",
        std::process::id(),
        understudy::cluster::node::unique_suffix()
    );
    let t_max = understudy::units::KeyValue::default().budget.t_max();
    let started = std::time::Instant::now();
    let run = IncrLoad::start(probe.clone(), via.clone(), unit, &prefix, keys, rate, t_max);
    while started.elapsed() < duration {
        run.progress(started, 0);
        tokio::time::sleep(Duration::from_millis(500)).await; // the progress line's pace
    }
    let totals = run.finish().await;
    eprintln!();
    let (lost, duplicates) = verify(&probe, &via, unit, &prefix, &totals.acked).await?;
    if json {
        let per_key: std::collections::BTreeMap<String, u64> = totals
            .acked
            .iter()
            .enumerate()
            .map(|(k, n)| (key(&prefix, k), *n))
            .collect();
        let line = serde_json::json!({
            "stimuli_sent": totals.stimuli_sent,
            "answered_ok": totals.answered_ok,
            "within_t_max": totals.within_t_max,
            "lost": lost,
            "duplicates": duplicates,
            "ignored": totals.ignored,
            "missed_t_max": totals.missed_t_max,
            "failed": totals.failed,
            "shed": totals.shed,
            "primaries": totals.primaries,
            "t_max_ms": t_max.as_millis() as u64,
            "acked_per_key": per_key,
        });
        println!("{line}");
    } else {
        println!("load on {unit} through {via}: {:?} at {rate}/s", duration);
        println!("  stimuli sent     {}", totals.stimuli_sent);
        println!("  answered ok      {}", totals.answered_ok);
        println!("  within T_max     {}", totals.within_t_max);
        println!("  lost             {lost}");
        println!("  duplicates       {duplicates}");
        println!("  ignored          {}", totals.ignored);
        println!("  failed           {}", totals.failed);
        println!(
            "  one primary per epoch  {} ({} epochs answered)",
            totals.primaries.holds(),
            totals.primaries.epochs
        );
        println!("  acknowledged per key:");
        for (k, n) in totals.acked.iter().enumerate() {
            println!("    {:<24} {n}", key(&prefix, k));
        }
    }
    if lost > 0 || duplicates > 0 {
        return Err("acknowledged increments were lost or applied twice".into());
    }
    Ok(())
}

async fn operate(api: &ApiAddr, token: &ApiTokenArg, change: ApiChange) -> Outcome {
    api.client()?
        .change(&change, token.token.as_deref())
        .await?;
    println!("{change} asked for; follow it with `understudy status`");
    Ok(())
}

async fn call(join: &str, cookie: &str, tls: &TlsArgs, unit: &str, stimulus: &str) -> Outcome {
    let probe = connect(join, cookie, tls).await?;
    let node = probe
        .nodes()
        .into_iter()
        .next()
        .ok_or("no node of the cluster is visible")?;
    let answer = probe.call_json(&node, unit, stimulus, None).await?;
    println!("{answer}");
    probe.stop();
    Ok(())
}
