//! `understudy demo --json` on three node processes with crash faults: its last line is one
//! JSON object, and it reports lost 0 and duplicates 0 with at least one failover measured.

use std::process::Command;

#[test]
fn demo_json_with_crash_faults_reports_no_loss_and_no_duplicates() {
    let out = Command::new(env!("CARGO_BIN_EXE_understudy"))
        .args(["demo", "--json", "--nodes", "3", "--duration", "8"])
        .args(["--rate", "1000", "--fault", "crash", "--fault-every", "3"])
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
    println!("demo summary: {summary}");
    for field in [
        "nodes",
        "stimuli_sent",
        "answered_ok",
        "within_t_max",
        "lost",
        "duplicates",
        "ignored",
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
    assert!(
        summary["failovers"].as_u64().unwrap_or(0) >= 1,
        "a failover was measured"
    );
    assert!(
        summary["answered_ok"].as_u64().unwrap_or(0) > 0,
        "stimuli were answered"
    );
}
