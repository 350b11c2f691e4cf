//! Real node processes on loopback ports: the `understudy` binary started three times, joined
//! into a cluster, driven under load, and the key-value unit's primary's node killed with
//! `kill -9`, or stopped with `SIGSTOP` past the detection time and resumed. Each test asserts
//! lost = 0 and duplicates = 0 (the final value of each key equals its acknowledged
//! increments) and reports the takeover time it measured. The tests run one at a time.
//!
//! The group manager runs on the group's Raft leader, wherever that is: the node faulted may
//! run it too, and one test kills exactly that node. Status is read from a node that stays up
//! (every node holds the committed table), and the load goes through such a node.

use std::sync::Arc;
use std::time::{Duration, Instant};
use understudy::actors::codec::encode;
use understudy::actors::envelope::StimulusAsk;
use understudy::cluster::probe::Probe;
use understudy::cluster::wire::{WireAnswer, WireAsk};
use understudy::demo::load::{verify, IncrLoad, LoadTotals};
use understudy::runtime::{ClientId, CopyId, Epoch, NodeName, Seq, StimulusId, UnitName};
use understudy::testkit::{self, heal, partition, wait_for_unit, Direction, ProcessCluster};
use understudy::units::KvRequest;

const COOKIE: &str = "cluster-processes-test";
const KEYS: usize = 8;
const T_MAX: Duration = Duration::from_secs(5);
/// Increments per second the load sends.
const RATE: u32 = 3_000;

/// The multi-process tests would fight over the cores: they take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// kv's primary (node, copy) and epoch in the committed tables node `observer` holds, once kv
/// serves with a ready standby at an epoch above `newer_than`.
async fn kv_placement(
    probe: &Probe,
    observer: &NodeName,
    newer_than: u64,
    limit: Duration,
) -> (NodeName, CopyId, u64) {
    let kv = wait_for_unit(probe, observer, "kv", newer_than, limit)
        .await
        .expect("kv did not serve with a ready standby in time");
    let (copy, node) = kv.primary.expect("a serving unit has a primary");
    (node, copy, kv.epoch.0)
}

/// A read of `k0` addressed to kv's copy `copy` on `node` itself (not through the name table):
/// what that copy answers.
async fn read_from_copy(probe: &Probe, node: &NodeName, copy: CopyId) -> WireAnswer {
    let ask = WireAsk::Stimulus(StimulusAsk {
        unit: UnitName::new("kv"),
        copy,
        id: StimulusId {
            client: ClientId(0x5eed),
            seq: Seq(1),
        },
        low_water: Seq(1),
        bound_at: Epoch(0),
        body: encode("stimulus", &KvRequest::Get { key: "k0".into() }).expect("encodes"),
        trace: None,
    });
    probe
        .ask(node, &ask, T_MAX + Duration::from_secs(5))
        .await
        .expect("the node answers")
}

/// Increments on `KEYS` keys of kv through `via`, each sent with a budget of `T_MAX`.
fn start_load(probe: &Arc<Probe>, via: &NodeName) -> IncrLoad {
    IncrLoad::start(probe.clone(), via.clone(), "kv", "k", KEYS, RATE, T_MAX)
}

/// Wait until `n` increments in all are acknowledged.
async fn reach(load: &IncrLoad, n: u64) {
    let reached = load.until_answered(n, Duration::from_secs(30)).await;
    assert!(reached, "the load stalled below {n} acknowledged");
}

/// Read every key through `via`: (lost, duplicated) against the acknowledged increments.
async fn lost_and_duplicated(probe: &Probe, via: &NodeName, totals: &LoadTotals) -> (u64, u64) {
    verify(probe, via, "kv", "k", &totals.acked)
        .await
        .expect("read every key")
}

/// Where the nodes' logs go.
fn logs_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-logs")
}

/// A node of `names` other than `avoid`.
fn other_than(names: &[NodeName], avoid: &NodeName) -> NodeName {
    testkit::other_than(names, avoid).expect("a cluster of three nodes has another node")
}

/// Three node processes named `{prefix}1..3` (the third is the seed), started with the units
/// file `units` if given, once kv serves with a ready standby: the cluster, a probe, the
/// nodes' names, kv's primary (node and copy) and its epoch.
async fn cluster_with_kv(
    prefix: &str,
    units: Option<&str>,
) -> (
    ProcessCluster,
    Arc<Probe>,
    Vec<NodeName>,
    (NodeName, CopyId),
    u64,
) {
    let (builder, names) =
        ProcessCluster::builder(env!("CARGO_BIN_EXE_understudy")).numbered(prefix, 3);
    let seed = names[2].clone();
    let mut builder = builder.cookie(COOKIE).logs(logs_dir());
    if let Some(units) = units {
        std::fs::create_dir_all(logs_dir()).expect("the log directory");
        let path = logs_dir().join(format!("{prefix}-units.toml"));
        std::fs::write(&path, units).expect("the units file");
        builder = builder.config(&path);
    }
    let cluster = builder.start().expect("node processes start");
    let probe = cluster
        .ready(Duration::from_secs(30))
        .await
        .expect("the cluster is ready");
    let (primary, copy, epoch) = kv_placement(&probe, &seed, 0, Duration::from_secs(30)).await;
    (cluster, Arc::new(probe), names, (primary, copy), epoch)
}

/// Waits until, in the table node `observer` holds, a group manager runs on a node other than
/// `gone` and every unit serves with a ready standby, none of its copies on `gone`; returns
/// the manager's node and the units.
async fn settled_without(
    probe: &Probe,
    observer: &NodeName,
    gone: &NodeName,
    limit: Duration,
) -> (NodeName, Vec<understudy::actors::UnitStatus>) {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(s) = probe.status(observer).await {
            let units = s.control.units;
            let off = units.iter().all(|u| {
                u.serving
                    && u.standby_ready
                    && u.primary.as_ref().is_some_and(|p| &p.1 != gone)
                    && u.standby.as_ref().is_some_and(|s| &s.1 != gone)
            });
            let manager = s.control.leader.filter(|l| l != gone);
            if let (Some(manager), true, false) = (manager, off, units.is_empty()) {
                if probe
                    .status(&manager)
                    .await
                    .is_ok_and(|m| m.control.runs_group_manager)
                {
                    return (manager, units);
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "the group did not settle without node {gone} in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await; // poll with a deadline
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_the_primarys_node_loses_and_duplicates_nothing_across_processes() {
    let _turn = SERIAL.lock().await;
    kill_9_of_kvs_primarys_node("k", None, "").await;
}

/// `kill -9` of kv's primary's node under load through another node (kv from `units`, if
/// given): the standby takes over, nothing acknowledged is lost, nothing applied twice.
async fn kill_9_of_kvs_primarys_node(prefix: &str, units: Option<&str>, what: &str) {
    let (mut cluster, probe, names, (victim, _), epoch) = cluster_with_kv(prefix, units).await;
    let via = other_than(&names, &victim);
    let load = start_load(&probe, &via);
    reach(&load, 300).await;

    let killed = Instant::now();
    cluster.kill9(&victim.0);
    let (new_primary, _, new_epoch) =
        kv_placement(&probe, &via, epoch, Duration::from_secs(30)).await;
    let takeover = killed.elapsed();
    reach(&load, load.answered_ok() + 300).await;
    let totals = load.finish().await;
    assert_ne!(new_primary, victim);
    assert!(new_epoch > epoch);

    // Under the trailing strategy, the caller's client on node `via` replays in the background
    // the answers the lost standby lacked: read until every acknowledged increment shows, for
    // at most T_max. (Under the synchronous strategy the first read must show them all.)
    let replayed = Instant::now();
    let (lost, duplicated) = loop {
        let (lost, duplicated) = lost_and_duplicated(&probe, &via, &totals).await;
        if lost == 0 || replayed.elapsed() > T_MAX {
            break (lost, duplicated);
        }
        tokio::time::sleep(Duration::from_millis(20)).await; // poll with a deadline
    };
    println!(
        "{what}every acknowledged increment showed {:?} after the load",
        replayed.elapsed()
    );
    // The gateway's book counted every call of the load against its budget, and the new
    // primary's node every stimulus it served.
    let via_status = probe.status(&via).await.expect("the gateway's status");
    let incr = |rows: &[understudy::runtime::BudgetRow]| {
        rows.iter()
            .find(|r| r.unit.0 == "kv" && r.kind == "incr")
            .map(|r| r.tally)
            .unwrap_or_default()
    };
    let called = incr(&via_status.budgets.called);
    println!("{what}the gateway's book for kv/incr: {called:?}");
    assert!(
        called.count >= totals.stimuli_sent,
        "every call counted: {called:?}"
    );
    // Each call the gateway timed lies within the test's own timing of it.
    assert!(
        called.over_max <= totals.missed_t_max,
        "missed T_max: {called:?}"
    );
    let primary_status = probe
        .status(&new_primary)
        .await
        .expect("the primary's status");
    let served = incr(&primary_status.budgets.served);
    assert!(served.count > 0, "the new primary counted what it served");
    totals.assert_clean(
        &format!("{what}kill -9 of {victim}"),
        (lost, duplicated),
        takeover,
        true,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigstop_of_the_primarys_node_past_detection_then_sigcont_and_the_old_primary_never_answers_for_its_old_epoch(
) {
    let _turn = SERIAL.lock().await;
    let (cluster, probe, names, (victim, old_copy), epoch) = cluster_with_kv("s", None).await;
    let seed = other_than(&names, &victim);
    let load = start_load(&probe, &seed);
    reach(&load, 300).await;

    let stopped = Instant::now();
    cluster.signal(&victim.0, "STOP").expect("SIGSTOP");
    let (new_primary, _, new_epoch) =
        kv_placement(&probe, &seed, epoch, Duration::from_secs(30)).await;
    let takeover = stopped.elapsed();
    reach(&load, load.answered_ok() + 300).await;
    let totals = load.finish().await;
    assert_ne!(new_primary, victim);
    assert!(new_epoch > epoch);

    // Resume the old primary's node and, first thing, address a read to the old primary copy
    // itself: it must refuse (its lease lapsed, it is fenced, or it was stopped), never answer.
    cluster.signal(&victim.0, "CONT").expect("SIGCONT");
    let answer = read_from_copy(&probe, &victim, old_copy).await;
    println!("the resumed old primary {old_copy} answered: {answer:?}");
    assert!(
        !matches!(answer, WireAnswer::Stimulus(Ok(_))),
        "the old primary answered for its old epoch: {answer:?}"
    );

    // Reads through the resumed node follow the rebinding to the new primary: a stale copy
    // would return the value from before the takeover, short of the increments since.
    let (lost_via_old, duplicated_via_old) = lost_and_duplicated(&probe, &victim, &totals).await;
    assert_eq!(
        (lost_via_old, duplicated_via_old),
        (0, 0),
        "reads through the resumed node saw a stale or doubled value"
    );
    let (lost, duplicated) = lost_and_duplicated(&probe, &seed, &totals).await;
    totals.assert_clean(
        &format!("SIGSTOP of {victim}"),
        (lost, duplicated),
        takeover,
        true,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_planned_switchover_under_load_loses_and_duplicates_nothing() {
    let _turn = SERIAL.lock().await;
    let (_cluster, probe, names, (old, _), epoch) = cluster_with_kv("w", None).await;
    let seed = other_than(&names, &old);
    let load = start_load(&probe, &seed);
    reach(&load, 300).await;

    let asked = Instant::now();
    probe
        .operate(WireAsk::Switchover {
            unit: UnitName::new("kv"),
        })
        .await
        .expect("the group manager takes the switchover");
    let (new_primary, _, new_epoch) =
        kv_placement(&probe, &seed, epoch, Duration::from_secs(30)).await;
    let switched = asked.elapsed();
    reach(&load, load.answered_ok() + 300).await;
    let totals = load.finish().await;
    assert_ne!(new_primary, old, "the primary moved");
    assert_eq!(new_epoch, epoch + 1);

    let (lost, duplicated) = lost_and_duplicated(&probe, &seed, &totals).await;
    totals.assert_clean("switchover of kv", (lost, duplicated), switched, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn draining_the_primarys_node_under_load_moves_every_copy_off_it_and_loses_nothing() {
    let _turn = SERIAL.lock().await;
    let (_cluster, probe, names, (drained, _), epoch) = cluster_with_kv("d", None).await;
    let seed = other_than(&names, &drained);
    let load = start_load(&probe, &seed);
    reach(&load, 300).await;

    let asked = Instant::now();
    probe
        .operate(WireAsk::Drain {
            node: drained.clone(),
        })
        .await
        .expect("the group manager takes the drain");
    // Wait until no copy of any unit is left on the drained node, kv has moved on, and every
    // unit serves with a ready standby again.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let units = probe
            .status(&seed)
            .await
            .map(|s| s.control.units)
            .unwrap_or_default();
        let off = units.iter().all(|u| {
            u.serving
                && u.standby_ready
                && u.primary.as_ref().is_some_and(|p| p.1 != drained)
                && u.standby.as_ref().is_some_and(|s| s.1 != drained)
        });
        let kv_moved = units.iter().any(|u| u.unit.0 == "kv" && u.epoch.0 > epoch);
        if !units.is_empty() && off && kv_moved {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the drain did not complete: {units:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await; // poll with a deadline
    }
    let drained_in = asked.elapsed();
    reach(&load, load.answered_ok() + 300).await;
    let totals = load.finish().await;

    let (lost, duplicated) = lost_and_duplicated(&probe, &seed, &totals).await;
    totals.assert_clean(
        &format!("drain of {drained}"),
        (lost, duplicated),
        drained_in,
        true,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_the_group_managers_node_moves_the_manager_and_loses_and_duplicates_nothing() {
    let _turn = SERIAL.lock().await;
    let (mut cluster, probe, names, (kv_node, _), _) = cluster_with_kv("g", None).await;
    let manager = probe
        .manager_node()
        .await
        .expect("a node runs the group manager");
    let via = other_than(&names, &manager);
    let load = start_load(&probe, &via);
    reach(&load, 300).await;

    let killed = Instant::now();
    cluster.kill9(&manager.0);
    let (new_manager, units) =
        settled_without(&probe, &via, &manager, Duration::from_secs(30)).await;
    let settled = killed.elapsed();
    reach(&load, load.answered_ok() + 300).await;
    let totals = load.finish().await;
    assert_ne!(new_manager, manager, "the group manager moved");
    println!(
        "the group manager moved from {manager} to {new_manager}; kv's primary was on {kv_node}; units now: {units:?}"
    );

    let (lost, duplicated) = lost_and_duplicated(&probe, &via, &totals).await;
    totals.assert_clean(
        &format!("kill -9 of the group manager's node {manager}"),
        (lost, duplicated),
        settled,
        kv_node == manager,
    );
}

/// kv replicated with the trailing strategy.
const TRAILING_KV: &str = r#"
[[units]]
name = "kv"
kind = "kv"
strategy = "trailing"
t_max_ms = 5000
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_a_trailing_primarys_node_loses_nothing_acknowledged_once_callers_replayed() {
    let _turn = SERIAL.lock().await;
    kill_9_of_kvs_primarys_node("t", Some(TRAILING_KV), "trailing, ").await;
}

/// kv with in-flight knowledge on synchronous replication.
const IN_FLIGHT_KV: &str = r#"
[[units]]
name = "kv"
kind = "kv"
strategy = "inflight"
t_max_ms = 5000
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_an_in_flight_primarys_node_loses_and_duplicates_nothing() {
    let _turn = SERIAL.lock().await;
    kill_9_of_kvs_primarys_node("f", Some(IN_FLIGHT_KV), "in-flight, ").await;
}

/// kv with in-flight knowledge on trailing replication.
const TRAILING_IN_FLIGHT_KV: &str = r#"
[[units]]
name = "kv"
kind = "kv"
strategy = "trailing"
inflight = true
t_max_ms = 5000
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_a_trailing_in_flight_primarys_node_loses_nothing_acknowledged_and_duplicates_nothing(
) {
    let _turn = SERIAL.lock().await;
    kill_9_of_kvs_primarys_node("g", Some(TRAILING_IN_FLIGHT_KV), "trailing in-flight, ").await;
}

/// The units file of the two-group test: kv in group `front`, the ledger in group `back`.
const TWO_GROUPS: &str = r#"
[[groups]]
name = "front"
[[groups]]
name = "back"
[[units]]
name = "kv"
kind = "kv"
group = "front"
[[units]]
name = "ledger"
kind = "ledger"
group = "back"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_two_groups_any_node_resolves_any_unit_and_a_kill_9_in_one_group_loses_nothing() {
    let _turn = SERIAL.lock().await;
    let logs = logs_dir();
    std::fs::create_dir_all(&logs).expect("the log directory");
    let config = logs.join("two-groups.toml");
    std::fs::write(&config, TWO_GROUPS).expect("the units file");
    let mut cluster = ProcessCluster::builder(env!("CARGO_BIN_EXE_understudy"))
        .group("front", &["f1", "f2", "f3"])
        .group("back", &["b1", "b2"])
        .seed("f3")
        .cookie(COOKIE)
        .config(&config)
        .logs(&logs)
        .start()
        .expect("node processes start");
    let probe = Arc::new(
        cluster
            .ready(Duration::from_secs(30))
            .await
            .expect("the cluster is ready"),
    );
    // A node of group back holds group front's table (as a learner), and the reverse.
    let back = NodeName::new("b1");
    let (victim, _, epoch) = kv_placement(&probe, &back, 0, Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let front_survivor = loop {
        let survivor = ["f1", "f2", "f3"]
            .into_iter()
            .map(NodeName::new)
            .find(|n| n != &victim)
            .expect("another node of front");
        let ledger_ready = probe.status(&survivor).await.is_ok_and(|s| {
            s.others
                .iter()
                .flat_map(|v| v.units.iter())
                .any(|u| u.unit.0 == "ledger" && u.serving && u.standby_ready)
        });
        if ledger_ready {
            break survivor;
        }
        assert!(
            Instant::now() < deadline,
            "group front's nodes did not learn group back's table in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await; // poll with a deadline
    };
    let total = probe
        .call_json(&front_survivor, "ledger", "\"Total\"", Some(T_MAX))
        .await
        .expect("a node of group front calls the ledger of group back");
    println!("the ledger's total, through {front_survivor}: {total}");

    // kv (group front) under load through a node of group back; kill kv's primary's node.
    let load = start_load(&probe, &back);
    reach(&load, 300).await;
    let killed = Instant::now();
    cluster.kill9(&victim.0);
    let (new_primary, _, new_epoch) =
        kv_placement(&probe, &back, epoch, Duration::from_secs(30)).await;
    let takeover = killed.elapsed();
    reach(&load, load.answered_ok() + 300).await;
    let totals = load.finish().await;
    assert_ne!(new_primary, victim);
    assert!(new_epoch > epoch);
    let (lost, duplicated) = lost_and_duplicated(&probe, &back, &totals).await;
    totals.assert_clean(
        &format!("two groups, kill -9 of {victim} (group front), load through {back} (group back)"),
        (lost, duplicated),
        takeover,
        true,
    );
}

/// Cuts kv's primary's node off from the two others (`direction`) under load through one of
/// them: the old primary must refuse once the majority promoted its standby, and again after
/// healing; nothing lost or doubled.
async fn cut_off_the_primarys_node(prefix: &str, direction: Direction) {
    let (_cluster, probe, names, (victim, old_copy), epoch) = cluster_with_kv(prefix, None).await;
    let others: Vec<NodeName> = names.iter().filter(|n| **n != victim).cloned().collect();
    let via = others[0].clone();
    let load = start_load(&probe, &via);
    reach(&load, 300).await;

    let cut = Instant::now();
    partition(&probe, std::slice::from_ref(&victim), &others, direction)
        .await
        .expect("the partition is set");
    let (new_primary, _, new_epoch) =
        kv_placement(&probe, &via, epoch, Duration::from_secs(30)).await;
    let takeover = cut.elapsed();
    assert_ne!(new_primary, victim);
    assert!(new_epoch > epoch);
    // The old primary runs on, cut off: by the time the majority promoted its standby its
    // lease had lapsed, so it refuses rather than answer for its old epoch.
    let answer = read_from_copy(&probe, &victim, old_copy).await;
    println!("the cut-off old primary {old_copy} answered: {answer:?}");
    assert!(
        !matches!(answer, WireAnswer::Stimulus(Ok(_))),
        "two primaries: the cut-off one answered for its old epoch: {answer:?}"
    );
    // A caller on the cut-off side is redirected to the new primary or, cut off from it, gets
    // a clear error once its T_max has run out: never an answer from the old epoch.
    let t_max = Duration::from_secs(1);
    let sent = Instant::now();
    let incr = r#"{"Incr":{"key":"cut-off-side","by":1}}"#;
    let minority = probe
        .call_json_served(&victim, "kv", incr, Some(t_max))
        .await;
    println!(
        "a call through the cut-off node {victim}: {minority:?} after {:?}",
        sent.elapsed()
    );
    match minority {
        Ok(answer) => assert!(
            answer.served_by.epoch.0 >= new_epoch,
            "the cut-off side was answered at an old epoch: {answer:?}"
        ),
        Err(e) => assert!(
            sent.elapsed() >= t_max,
            "the cut-off side got an error before its T_max: {e}"
        ),
    }
    reach(&load, load.answered_ok() + 300).await;

    // Healed, the old primary's node learns the new epoch and serves as capacity again.
    heal(&probe, &names).await.expect("the partition heals");
    let answer = read_from_copy(&probe, &victim, old_copy).await;
    assert!(
        !matches!(answer, WireAnswer::Stimulus(Ok(_))),
        "after healing, the old primary answered: {answer:?}"
    );
    reach(&load, load.answered_ok() + 300).await;
    let totals = load.finish().await;
    let (lost, duplicated) = lost_and_duplicated(&probe, &via, &totals).await;
    totals.assert_clean(
        &format!("{direction:?} cut of kv's primary's node {victim} from the majority"),
        (lost, duplicated),
        takeover,
        true,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_primary_cut_off_from_the_majority_stops_serving_before_its_standby_is_promoted() {
    let _turn = SERIAL.lock().await;
    cut_off_the_primarys_node("p", Direction::Both).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_primary_whose_messages_no_longer_arrive_stops_serving_before_its_standby_is_promoted() {
    let _turn = SERIAL.lock().await;
    cut_off_the_primarys_node("q", Direction::FirstToSecond).await;
}

/// Cuts the group manager's node off (`direction`: both ways, or only what it sends) under
/// load through another node; checks that the manager moves, that kv's old primary (if it was
/// on that node) no longer answers, and that nothing is lost or doubled after healing.
async fn cut_off_the_managers_node(prefix: &str, direction: Direction) {
    let (_cluster, probe, names, (kv_node, kv_copy), _) = cluster_with_kv(prefix, None).await;
    let manager = probe
        .manager_node()
        .await
        .expect("a node runs the group manager");
    let others: Vec<NodeName> = names.iter().filter(|n| **n != manager).cloned().collect();
    let via = others[0].clone();
    let load = start_load(&probe, &via);
    reach(&load, 300).await;

    let cut = Instant::now();
    partition(&probe, std::slice::from_ref(&manager), &others, direction)
        .await
        .expect("the partition is set");
    let (new_manager, _) = settled_without(&probe, &via, &manager, Duration::from_secs(30)).await;
    let settled = cut.elapsed();
    assert_ne!(new_manager, manager);
    if kv_node == manager {
        let answer = read_from_copy(&probe, &manager, kv_copy).await;
        assert!(
            !matches!(answer, WireAnswer::Stimulus(Ok(_))),
            "two primaries: kv's cut-off old primary answered: {answer:?}"
        );
    }
    reach(&load, load.answered_ok() + 300).await;
    heal(&probe, &names).await.expect("the partition heals");
    reach(&load, load.answered_ok() + 300).await;
    let totals = load.finish().await;
    let (lost, duplicated) = lost_and_duplicated(&probe, &via, &totals).await;
    totals.assert_clean(
        &format!("{direction:?} cut of the group manager's node {manager} (kv's primary was on {kv_node})"),
        (lost, duplicated),
        settled,
        kv_node == manager,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_managers_node_cut_off_both_ways_loses_the_manager_and_nothing_else() {
    let _turn = SERIAL.lock().await;
    cut_off_the_managers_node("m", Direction::Both).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_managers_node_that_can_no_longer_send_loses_the_manager_and_nothing_else() {
    let _turn = SERIAL.lock().await;
    cut_off_the_managers_node("o", Direction::FirstToSecond).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_the_test_kit_starts_stops_by_itself_when_its_parent_goes() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let _turn = SERIAL.lock().await;
    let port = understudy::testkit::free_port().expect("a free port");
    let mut node = Command::new(env!("CARGO_BIN_EXE_understudy"))
        .args(["node", "--name", "solo", "--port", &port.to_string()])
        .env(understudy::cluster::node::STOP_WITH_STDIN, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the node starts");
    let mut line = String::new();
    let stdout = node.stdout.take().expect("its output");
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("it says it listens");
    assert!(line.contains("listening"), "{line}");
    // The parent going closes the node's standard input, as dropping our end of it does.
    drop(node.stdin.take());
    let closed = Instant::now();
    let deadline = closed + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = node.try_wait().expect("the node's status") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = node.kill();
            panic!("the node still ran 10 s after its standard input closed");
        }
        tokio::time::sleep(Duration::from_millis(10)).await; // poll with a deadline
    };
    println!(
        "the node stopped {:?} after its input closed: {status}",
        closed.elapsed()
    );
    assert!(status.success(), "it stopped cleanly: {status}");
}
