//! `WireAsk::Bench` over real node processes (the load `understudy bench` asks a node for):
//! three `understudy` nodes, short loads from the node holding neither of kv's copies against
//! the baseline counter of kv's primary's node and against kv itself, and the errors a bench
//! answers when it cannot measure. No timing is asserted: only that the loads ran, without
//! errors, and that kv's counters moved by at least what was counted.

use std::time::Duration;
use understudy::cluster::bench::{BenchError, BenchPlan, BenchTarget};
use understudy::cluster::probe::ProbeError;
use understudy::runtime::{NodeName, UnitName};
use understudy::testkit::{wait_for_unit, ProcessCluster};

const INCR: &str = r#"{"Incr":{"key":"bench-{worker}","by":1}}"#;

/// The multi-process tests would fight over the cores: they take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread")]
async fn a_node_drives_closed_loops_against_the_baseline_and_a_unit_and_says_what_it_cannot_measure(
) {
    let _turn = SERIAL.lock().await;
    let nodes = ["b1", "b2", "b3"];
    let cluster = ProcessCluster::builder(env!("CARGO_BIN_EXE_understudy"))
        .nodes(&nodes)
        .cookie("bench-test")
        .start()
        .expect("three nodes start");
    let probe = cluster
        .ready(Duration::from_secs(30))
        .await
        .expect("the cluster forms");
    let kv = wait_for_unit(
        &probe,
        &NodeName::new("b1"),
        "kv",
        0,
        Duration::from_secs(10),
    )
    .await
    .expect("kv serves");
    let (_, primary) = kv.primary.expect("a serving unit has a primary");
    let standby = kv.standby.map(|(_, n)| n);
    let driver = nodes
        .map(NodeName::new)
        .into_iter()
        .find(|n| *n != primary && Some(n) != standby.as_ref())
        .expect("a node with neither copy");
    let workers = 4;
    let plan = BenchPlan::new(
        workers,
        Duration::from_millis(50),
        Duration::from_millis(300),
    )
    .expect("a plan");

    let baseline = BenchTarget::Baseline {
        node: primary.clone(),
    };
    let base = probe
        .bench(&driver, baseline, plan)
        .await
        .expect("the baseline is measured");
    assert!(base.ops > 0 && base.errors == 0, "{base:?}");
    assert!(base.p50_us <= base.p99_us && base.p99_us <= base.max_us);

    let unit = BenchTarget::Unit {
        unit: UnitName::new("kv"),
        stimulus: INCR.to_string(),
    };
    let stats = probe
        .bench(&driver, unit, plan)
        .await
        .expect("kv is measured");
    assert!(stats.ops > 0 && stats.errors == 0, "{stats:?}");
    // Every counted increment is in kv (with the first call's and the uncounted ones).
    let mut total = 0u64;
    for w in 0..workers {
        let json = format!(r#"{{"Get":{{"key":"bench-{w}"}}}}"#);
        let answer = probe
            .call_json(&driver, "kv", &json, None)
            .await
            .expect("kv answers a get");
        let value: serde_json::Value = serde_json::from_str(&answer).expect("JSON");
        total += value["Value"]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    assert!(total > stats.ops, "kv counted {total}, the bench {stats:?}");

    let refused = |target| probe.bench(&driver, target, plan);
    let nobody = refused(BenchTarget::Baseline {
        node: NodeName::new("nobody"),
    });
    assert!(
        matches!(
            nobody.await,
            Err(ProbeError::Bench(BenchError::NoBaseline { .. }))
        ),
        "a node that does not exist has no counter"
    );
    let unknown = refused(BenchTarget::Unit {
        unit: UnitName::new("nothing"),
        stimulus: INCR.to_string(),
    });
    assert!(matches!(
        unknown.await,
        Err(ProbeError::Bench(BenchError::UnknownUnit { .. }))
    ));
    let bad = refused(BenchTarget::Unit {
        unit: UnitName::new("kv"),
        stimulus: r#"{"Frobnicate":1}"#.to_string(),
    });
    assert!(matches!(
        bad.await,
        Err(ProbeError::Bench(BenchError::BadStimulus { .. }))
    ));
}

/// Two takeover trials of each fault as `understudy bench` runs them, in a synchronous
/// cluster: `kill -9` of kv's primary's node, of the node running both kv's primary and the
/// group manager, `SIGSTOP` of the primary's node, and a panic in the primary's handler. Each
/// trial valid, no request failed or lost, the cluster whole again after each. No timing is
/// asserted beyond a takeover having happened.
#[tokio::test(flavor = "multi_thread")]
async fn takeover_trials_fault_the_primary_four_ways_and_measure_the_first_answer_at_a_newer_epoch()
{
    use understudy::bench::takeover::Fault;
    let _turn = SERIAL.lock().await;
    let dir = std::env::temp_dir().join(format!("understudy-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let units = dir.join("units.toml");
    std::fs::write(
        &units,
        "[[units]]\nname = \"kv\"\nkind = \"kv\"\nstrategy = \"synchronous\"\nt_max_ms = 2000\n",
    )
    .expect("the units file");
    let mut cluster = ProcessCluster::builder(env!("CARGO_BIN_EXE_understudy"))
        .nodes(&["t1", "t2", "t3"])
        .cookie("bench-takeover-test")
        .config(&units)
        .start()
        .expect("three nodes start");
    let probe = cluster
        .ready(Duration::from_secs(30))
        .await
        .expect("the cluster forms");
    let run = understudy::bench::takeover::run(&mut cluster, &probe, 2).await;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(run.stopped.is_none(), "{run:#?}");
    for t in &run.trials {
        assert!(t.invalid.is_none(), "{t:#?}");
        assert_eq!((t.failed, t.lost), (0, 0), "{t:#?}");
        assert!(t.takeover_ms.is_some() && t.epoch_after > Some(t.epoch_before));
        assert_ne!(t.faulted, t.driver);
        assert!(t.counters_moved >= Some(t.answered));
    }
    for fault in Fault::ALL {
        assert!(run.times(fault).len() >= 2, "{fault:?}: {run:#?}");
    }
}

/// The scale measurement of `understudy bench` on a small cluster (five nodes, 20 units): the
/// cold start, the memory per unit pair and the node loss are all measured, and killing the
/// node with the most primaries lost at least one, each of which serves again elsewhere at a
/// newer epoch. No timing is asserted.
#[tokio::test(flavor = "multi_thread")]
async fn scale_measures_cold_start_memory_per_unit_and_the_loss_of_the_node_with_most_primaries() {
    let _turn = SERIAL.lock().await;
    let mut plan = understudy::bench::scale::ScalePlan::new(
        env!("CARGO_BIN_EXE_understudy"),
        20,
        Duration::from_millis(200),
    );
    plan.cookie = "bench-scale-test".to_string();
    plan.dir = std::env::temp_dir().join(format!(
        "understudy-bench-scale-test-{}",
        std::process::id()
    ));
    let run = understudy::bench::scale::run(&plan).await;
    let _ = std::fs::remove_dir_all(&plan.dir);
    assert!(run.errors.is_empty(), "{run:#?}");
    assert!(run.cold_start_ms.is_some_and(|ms| ms > 0.0), "{run:#?}");
    let (one, all) = (
        run.rss_one_unit
            .as_ref()
            .expect("the one-unit cluster's memory"),
        run.rss_all_units
            .as_ref()
            .expect("the 20-unit cluster's memory"),
    );
    assert_eq!((one.by_node.len(), all.by_node.len()), (5, 5));
    assert!(one.total_kib > 0 && all.total_kib > 0, "{run:#?}");
    assert!(run.rss_per_unit_kib().is_some(), "{run:#?}");
    let loss = run.node_loss.as_ref().expect("the node loss is measured");
    assert!(loss.primaries_lost >= 1, "{loss:#?}");
    assert_eq!(loss.serving_again, loss.primaries_lost, "{loss:#?}");
    assert!(loss.serving_ms > 0.0);
    assert_ne!(loss.killed, loss.observer);
    assert!(run.complete());
}
