//! Three hits nodes, started as processes of the `hits` binary. One caller adds 1 at a time;
//! half way, the node of the counter's primary is killed with `kill -9`. The count must end
//! equal to the additions acknowledged — none lost, none counted twice — with one primary
//! per epoch.

use std::time::{Duration, Instant};
use understudy::runtime::NodeName;
use understudy::testkit::{wait_for_unit, History, Outcome, ProcessCluster};

const T_MAX: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread")]
async fn every_acknowledged_add_counts_once_across_kill_9_of_the_primarys_node() {
    let mut cluster = ProcessCluster::builder(env!("CARGO_BIN_EXE_hits"))
        .nodes(&["a", "b", "c"])
        .start()
        .expect("three nodes start");
    let probe = cluster
        .ready(Duration::from_secs(30))
        .await
        .expect("the cluster forms");

    // The counter's primary node, and another node to call through.
    let a = NodeName::new("a");
    let hits = wait_for_unit(&probe, &a, "hits", 0, Duration::from_secs(10))
        .await
        .expect("hits serves");
    let (_, primary) = hits.primary.expect("a serving unit has a primary");
    let via = ["a", "b", "c"]
        .map(NodeName::new)
        .into_iter()
        .find(|node| *node != primary)
        .expect("another node");

    let history = History::new();
    for i in 0..400 {
        if i == 200 {
            cluster.kill9(&primary.0);
        }
        let sent = Instant::now();
        let call = probe.call_json_served(&via, "hits", r#"{"Add":1}"#, Some(T_MAX));
        let (outcome, served_by) = match call.await {
            Ok(answer) => (Outcome::Answered(answer.json), Some(answer.served_by)),
            Err(error) => (Outcome::Failed(error.to_string()), None),
        };
        history.record_served("add 1", sent, T_MAX, outcome, served_by);
    }

    let count: u64 = probe
        .call_json(&via, "hits", r#""Read""#, Some(T_MAX))
        .await
        .expect("the count is read")
        .parse()
        .expect("a number");
    let counts = history.counts();
    let check = history.check_counter(count);
    let primaries = history.check_primaries();
    // The first call after the kill waits out the takeover.
    let takeover = history.records().iter().map(|r| r.took).max();
    println!("kill -9 of {primary}: takeover {takeover:?}, count {count}, {counts:?}, {check:?}, {primaries:?}");
    assert_eq!(check.lost, 0, "acknowledged additions lost");
    assert_eq!(check.duplicated, 0, "additions counted twice");
    assert_eq!(counts.failed, 0, "a call failed");
    assert!(
        primaries.holds(),
        "not one primary per epoch: {primaries:?}"
    );
    assert!(primaries.epochs >= 2, "the standby never took over");
}
