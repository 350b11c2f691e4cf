//! The operator's commands against real node processes: `understudy demo --json` with crash
//! faults (kv synchronous, trailing, and with in-flight knowledge), and with crash, hang and
//! panic in turn (its last line is one JSON object reporting lost 0 and duplicates 0 with the
//! failovers measured); the demo's other examples (a pipeline whose middle unit is faulted,
//! checked on its last unit; a ledger split over two units faulted in turn, whose total never
//! changes); and `understudy load --json` against a running cluster.

use std::process::Command;
use std::sync::Mutex;

/// These tests start node processes that would fight over the cores: they take turns.
static SERIAL: Mutex<()> = Mutex::new(());

/// Runs `understudy demo --json --nodes 3` with `args`, checks it succeeded, and returns its
/// summary (the last line).
fn run_demo(args: &[&str]) -> serde_json::Value {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let out = Command::new(env!("CARGO_BIN_EXE_understudy"))
        .args(["demo", "--json", "--nodes", "3"])
        .args(args)
        .output()
        .expect("run understudy demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {}\n{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().expect("the demo printed a summary");
    let summary: serde_json::Value = serde_json::from_str(last).expect("the last line is JSON");
    println!("demo summary ({}): {summary}", args.join(" "));
    summary
}

/// Checks what every summary reports: its fields, nothing lost or doubled, one primary per
/// epoch, and stimuli answered.
fn check_summary(summary: &serde_json::Value) {
    for field in [
        "example",
        "strategy",
        "missed_t_max",
        "nodes",
        "stimuli_sent",
        "answered_ok",
        "within_t_max",
        "lost",
        "duplicates",
        "ignored",
        "failed",
        "shed",
        "primaries",
        "failovers",
        "failover_ms",
        "t_max_ms",
    ] {
        assert!(summary.get(field).is_some(), "the summary has {field}");
    }
    for q in ["p50", "p99", "max"] {
        assert!(
            summary["failover_ms"].get(q).is_some(),
            "failover_ms has {q}"
        );
    }
    assert_eq!(summary["nodes"], 3);
    assert_eq!(summary["lost"], 0, "lost");
    assert_eq!(summary["duplicates"], 0, "duplicates");
    assert_eq!(
        summary["primaries"]["epochs_with_two_primaries"], 0,
        "two copies answered in one epoch"
    );
    assert_eq!(
        summary["primaries"]["stale_answers"], 0,
        "an old primary answered after a newer one had"
    );
    assert!(
        summary["answered_ok"].as_u64().unwrap_or(0) > 0,
        "stimuli were answered"
    );
}

/// Runs the kv demo with kv's `strategy` and `fault` every 3 s for `seconds`, checks the
/// summary, that kv's answers span more than one epoch, and returns the summary.
fn demo_summary(strategy: &str, fault: &str, seconds: &str) -> serde_json::Value {
    let summary = run_demo(&[
        "--duration",
        seconds,
        "--rate",
        "1000",
        "--fault",
        fault,
        "--fault-every",
        "3",
        "--strategy",
        strategy,
    ]);
    check_summary(&summary);
    assert_eq!(summary["example"], "kv");
    assert!(
        summary["primaries"]["epochs"].as_u64().unwrap_or(0) >= 2,
        "answers came from more than one epoch"
    );
    summary
}

#[test]
fn demo_json_with_crash_faults_reports_no_loss_and_no_duplicates() {
    let summary = demo_summary("sync", "crash", "8");
    assert_eq!(summary["strategy"], "synchronous");
    assert!(
        summary["failovers"].as_u64().unwrap_or(0) >= 1,
        "a failover was measured"
    );
}

#[test]
fn demo_json_with_the_trailing_strategy_and_crash_faults_reports_no_loss_and_no_duplicates() {
    let summary = demo_summary("trailing", "crash", "8");
    assert_eq!(summary["strategy"], "trailing");
    assert!(
        summary["failovers"].as_u64().unwrap_or(0) >= 1,
        "a failover was measured"
    );
}

#[test]
fn demo_json_with_the_inflight_strategy_and_a_crash_fault_reports_no_loss_and_no_duplicates() {
    let summary = demo_summary("inflight", "crash", "6");
    assert_eq!(summary["strategy"], "inflight");
    assert!(summary["ignored"].is_u64(), "ignored is a count");
    assert!(summary["missed_t_max"].is_u64(), "missed_t_max is a count");
    assert!(
        summary["failovers"].as_u64().unwrap_or(0) >= 1,
        "a failover was measured"
    );
}

#[test]
fn demo_json_of_the_pipeline_with_its_middle_unit_crashed_loses_and_duplicates_nothing_on_tally() {
    let summary = run_demo(&[
        "--example",
        "pipeline",
        "--duration",
        "6",
        "--fault",
        "crash",
        "--fault-every",
        "3",
    ]);
    check_summary(&summary);
    assert_eq!(summary["example"], "pipeline");
    let faulted: Vec<&str> = summary["faults"]
        .as_array()
        .map(|f| f.iter().filter_map(|f| f["unit"].as_str()).collect())
        .unwrap_or_default();
    assert!(!faulted.is_empty(), "a fault was injected");
    assert!(
        faulted.iter().all(|u| *u == "enrich"),
        "the middle unit's primary was faulted: {faulted:?}"
    );
    assert!(
        summary["failovers"].as_u64().unwrap_or(0) >= 1,
        "a failover was measured"
    );
}

#[test]
fn demo_json_of_the_split_ledger_with_both_units_faulted_in_turn_keeps_the_total_unchanged() {
    let summary = run_demo(&[
        "--example",
        "ledger",
        "--duration",
        "8",
        "--fault",
        "mixed",
        "--fault-every",
        "3",
    ]);
    check_summary(&summary);
    assert_eq!(summary["example"], "ledger");
    assert_eq!(
        summary["total_unchanged"], true,
        "money was created or destroyed"
    );
    assert_eq!(summary["total_before"], summary["total_after"]);
    assert!(
        summary["total_before"].as_i64().unwrap_or(0) > 0,
        "accounts were opened"
    );
    let faulted: Vec<&str> = summary["faults"]
        .as_array()
        .map(|f| f.iter().filter_map(|f| f["unit"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        faulted,
        ["ledger-a", "ledger-b"],
        "the primaries of both units were faulted in turn"
    );
}

#[test]
fn demo_json_with_crash_hang_and_panic_in_turn_reports_no_loss_and_no_duplicates() {
    let summary = demo_summary("sync", "mixed", "11");
    let kinds: Vec<&str> = summary["faults"]
        .as_array()
        .map(|f| f.iter().filter_map(|f| f["kind"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        kinds,
        ["crash", "hang", "panic"],
        "each kind of fault was injected once"
    );
    assert_eq!(
        summary["failovers"].as_u64(),
        Some(3),
        "every fault was followed by a failover"
    );
}

#[test]
fn load_json_against_a_running_cluster_counts_every_acknowledged_increment_per_key() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let cluster = understudy::testkit::ProcessCluster::start(
        env!("CARGO_BIN_EXE_understudy"),
        &["l1", "l2", "l3"],
        "l3",
        "load-test",
    )
    .expect("node processes start");
    let out = Command::new(env!("CARGO_BIN_EXE_understudy"))
        .args([
            "load",
            "--json",
            "--join",
            &cluster.addr("l3").expect("address"),
        ])
        .args([
            "--cookie",
            "load-test",
            "--rate",
            "500",
            "--duration",
            "3",
            "--keys",
            "4",
        ])
        .output()
        .expect("run understudy load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "load failed: {}\n{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().expect("load printed a summary");
    let summary: serde_json::Value = serde_json::from_str(last).expect("the last line is JSON");
    println!("load summary: {summary}");
    assert_eq!(summary["lost"], 0);
    assert_eq!(summary["duplicates"], 0);
    let per_key = summary["acked_per_key"].as_object().expect("acked per key");
    assert_eq!(per_key.len(), 4);
    let acked: u64 = per_key.values().filter_map(serde_json::Value::as_u64).sum();
    assert_eq!(Some(acked), summary["answered_ok"].as_u64());
    assert!(acked > 0);
}
