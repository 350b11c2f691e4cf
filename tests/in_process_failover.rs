//! Step-1 failover tests with several nodes in one process: a panic inside the primary's
//! handler, a hung primary, and the loss of a whole `LocalManager` with its copies, each under
//! concurrent load. Each test asserts the guarantees of `docs/semantics.md`: every
//! acknowledged stimulus is kept, none is applied twice, and a caller sees an error only after
//! its `T_max`; and it prints what it measured.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use understudy::actors::{NameState, UnitStatus};
use understudy::runtime::{Epoch, Flush, Strategy};
use understudy::{
    Catalog, ClusterConfig, CopyConfig, Handled, InProcessCluster, Unit, UnitClient, UnitKind,
};

const T_MAX: Duration = Duration::from_secs(4);

/// Switches a test flips to make the primary misbehave once. Both copies share them (they
/// run in this process), and each switch is consumed by the first copy that meets it, so the
/// stimulus that tripped it succeeds when it is resent to the new primary.
#[derive(Debug, Default)]
struct Faults {
    panic_armed: AtomicBool,
    hang_armed: AtomicBool,
    released: Mutex<bool>,
    release: Condvar,
}

impl Faults {
    fn release_hung(&self) {
        let mut r = self.released.lock().unwrap_or_else(|p| p.into_inner());
        *r = true;
        self.release.notify_all();
    }
}

/// Records how many times each stimulus took effect.
#[derive(Clone, Debug)]
struct Tally {
    faults: Arc<Faults>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
enum TallyReq {
    /// Count `key` once.
    Mark(String),
    /// Panic inside the handler (once, when armed).
    Panic,
    /// Block the handler's thread until released (once, when armed).
    Hang,
    /// The whole state.
    Dump,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum TallyResp {
    Marked,
    Fine,
    Dump(BTreeMap<String, u32>),
}

impl Unit for Tally {
    type State = BTreeMap<String, u32>;
    type Stimulus = TallyReq;
    type Response = TallyResp;
    type Update = String;

    fn handle(&self, state: &Self::State, stimulus: &TallyReq) -> Handled<Self> {
        match stimulus {
            TallyReq::Mark(k) => Handled::write(TallyResp::Marked, vec![k.clone()]),
            TallyReq::Panic => {
                if self.faults.panic_armed.swap(false, Ordering::SeqCst) {
                    panic!("the test asked this primary to panic");
                }
                Handled::read(TallyResp::Fine)
            }
            TallyReq::Hang => {
                if self.faults.hang_armed.swap(false, Ordering::SeqCst) {
                    // Block this thread as a stuck handler would; the test releases it at its
                    // end (or after 30 s at most).
                    let guard = self
                        .faults
                        .released
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    let _ = self.faults.release.wait_timeout_while(
                        guard,
                        Duration::from_secs(30),
                        |r| !*r,
                    );
                }
                Handled::read(TallyResp::Fine)
            }
            TallyReq::Dump => Handled::read(TallyResp::Dump(state.clone())),
        }
    }

    fn apply(&self, state: &mut Self::State, update: &String) {
        *state.entry(update.clone()).or_insert(0) += 1;
    }
}

struct Outcome {
    acked: Vec<String>,
    errors: Vec<(String, Duration)>,
    slowest: Duration,
    /// The callers' client (under the trailing strategy it may still replay what it keeps).
    client: UnitClient<Tally>,
}

/// A client of the tally on node `via`.
fn tally_client(cluster: &InProcessCluster, faults: &Arc<Faults>, via: &str) -> UnitClient<Tally> {
    let tally = Tally {
        faults: faults.clone(),
    };
    cluster.client(via, "tally", tally).expect("a client")
}

/// The copies' tuning for the trailing strategy with `flush`.
fn trailing(flush: Flush) -> CopyConfig {
    CopyConfig {
        strategy: Strategy::Trailing(flush),
        ..CopyConfig::default()
    }
}

async fn start(faults: &Arc<Faults>) -> InProcessCluster {
    start_with(faults, CopyConfig::default()).await
}

async fn start_with(faults: &Arc<Faults>, config: CopyConfig) -> InProcessCluster {
    let catalog = Catalog::new().with_unit(
        "tally",
        UnitKind::new(Tally {
            faults: faults.clone(),
        }),
        config,
    );
    let cluster = InProcessCluster::start(catalog, &["a", "b", "c"], ClusterConfig::default())
        .await
        .expect("cluster starts");
    cluster
        .wait_ready(Duration::from_secs(10))
        .await
        .expect("the unit serves with a ready standby");
    cluster
}

fn tally_status(units: &[UnitStatus]) -> UnitStatus {
    units
        .iter()
        .find(|u| u.unit.0 == "tally")
        .cloned()
        .expect("tally is placed")
}

/// Drive `workers` concurrent callers from node `via`, each sending marks one after another
/// (at most `per_worker`). Once `WARMUP` marks are acknowledged, `fault` runs (it returns
/// when the takeover is complete); the callers go on until `WARMUP` more marks are
/// acknowledged after it, so stimuli are queued and in flight across the whole takeover.
async fn load_with_fault<F, Fut>(
    cluster: &InProcessCluster,
    faults: &Arc<Faults>,
    via: &str,
    workers: usize,
    per_worker: usize,
    fault: F,
) -> Outcome
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    const WARMUP: usize = 300;
    let client = tally_client(cluster, faults, via);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let slowest = Arc::new(Mutex::new(Duration::ZERO));
    let stop = Arc::new(AtomicBool::new(false));
    let (count_tx, mut count_rx) = tokio::sync::watch::channel(0usize);
    let count_tx = Arc::new(count_tx);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let client = client.clone();
        let acked = acked.clone();
        let errors = errors.clone();
        let slowest = slowest.clone();
        let stop = stop.clone();
        let count_tx = count_tx.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_worker {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let key = format!("w{w}-{i}");
                let t0 = Instant::now();
                let r = client.call_within(TallyReq::Mark(key.clone()), T_MAX).await;
                let took = t0.elapsed();
                {
                    let mut s = slowest.lock().expect("lock");
                    *s = (*s).max(took);
                }
                match r {
                    Ok(TallyResp::Marked) => {
                        let n = {
                            let mut a = acked.lock().expect("lock");
                            a.push(key);
                            a.len()
                        };
                        count_tx.send_replace(n);
                    }
                    Ok(other) => panic!("unexpected answer {other:?}"),
                    Err(e) => errors
                        .lock()
                        .expect("lock")
                        .push((format!("{key}: {e}"), took)),
                }
            }
        }));
    }
    let limit = Duration::from_secs(20);
    tokio::time::timeout(limit, count_rx.wait_for(|n| *n >= WARMUP))
        .await
        .expect("load warms up")
        .expect("workers alive");
    fault().await;
    let target = *count_rx.borrow() + WARMUP;
    tokio::time::timeout(limit, count_rx.wait_for(|n| *n >= target))
        .await
        .expect("load goes on after the takeover")
        .expect("workers alive");
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.expect("worker");
    }
    let acked = acked.lock().expect("lock").clone();
    let errors = errors.lock().expect("lock").clone();
    let slowest = *slowest.lock().expect("lock");
    Outcome {
        acked,
        errors,
        slowest,
        client,
    }
}

/// Read the final state from the current primary and check the guarantees.
async fn check(
    cluster: &InProcessCluster,
    faults: &Arc<Faults>,
    via: &str,
    out: &Outcome,
    what: &str,
    takeover: Duration,
) {
    // Under the trailing strategy the callers' client replays, after a takeover, what it was
    // answered and the lost primary's standby lacked: wait until it kept nothing back.
    let replayed = Instant::now();
    while out.client.unconfirmed() > 0 {
        assert!(
            replayed.elapsed() < T_MAX,
            "{what}: {} answered stimuli still unconfirmed",
            out.client.unconfirmed()
        );
        tokio::time::sleep(Duration::from_millis(5)).await; // poll with a deadline
    }
    let losses = out.client.take_trailing_losses();
    assert!(losses.is_empty(), "{what}: replays refused: {losses:?}");
    println!(
        "{what}: {} answered stimuli replayed to the new primary",
        out.client.replays()
    );
    let client = tally_client(cluster, faults, via);
    let TallyResp::Dump(state) = client
        .call_within(TallyReq::Dump, T_MAX)
        .await
        .expect("dump")
    else {
        panic!("dump answered something else");
    };
    let lost: Vec<_> = out
        .acked
        .iter()
        .filter(|k| !state.contains_key(*k))
        .collect();
    let duplicated: Vec<_> = state.iter().filter(|(_, n)| **n > 1).collect();
    let early_errors: Vec<_> = out
        .errors
        .iter()
        .filter(|(_, took)| *took < T_MAX)
        .collect();
    println!(
        "{what}: acknowledged {}, lost {}, duplicated {}, errors {} (before T_max: {}), takeover {:?}, slowest call {:?}",
        out.acked.len(),
        lost.len(),
        duplicated.len(),
        out.errors.len(),
        early_errors.len(),
        takeover,
        out.slowest
    );
    assert!(lost.is_empty(), "{what}: acknowledged but lost: {lost:?}");
    assert!(
        duplicated.is_empty(),
        "{what}: applied twice: {duplicated:?}"
    );
    assert!(
        early_errors.is_empty(),
        "{what}: errors before T_max: {early_errors:?}"
    );
}

/// Wait until the unit serves at an epoch after `before`, with every node's name table
/// rebound; returns the new status.
async fn await_takeover(cluster: &InProcessCluster, before: Epoch) -> UnitStatus {
    let units = cluster
        .wait_until(
            Duration::from_secs(10),
            "a promoted primary serving",
            |units| {
                let t = tally_status(units);
                t.serving && t.epoch > before
            },
        )
        .await
        .expect("takeover completes");
    tally_status(&units)
}

fn assert_rebound(cluster: &InProcessCluster, nodes: &[&str], now: &UnitStatus) {
    for n in nodes {
        let reg = cluster.registry(n).expect("node");
        match reg.resolve(&now.unit) {
            Some(NameState::Bound(b)) => {
                assert_eq!(b.epoch, now.epoch, "node {n} is rebound to the new epoch");
                assert_eq!(Some(b.copy), now.primary.as_ref().map(|p| p.0));
            }
            other => panic!("node {n} has no binding: {other:?}"),
        }
    }
}

/// Inject `fault` under load from node `via`, measure the takeover (from the fault until the
/// promoted primary serves and is bound), and check every guarantee. Returns the unit before
/// and after, and how many answered stimuli the callers replayed.
async fn fault_under_load<F, Fut>(
    cluster: &InProcessCluster,
    faults: &Arc<Faults>,
    via: &str,
    what: &str,
    fault: F,
) -> (UnitStatus, UnitStatus, u64)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let before = tally_status(&cluster.status().await.expect("status"));
    let measured = Arc::new(Mutex::new((Duration::ZERO, None::<UnitStatus>)));
    let m = measured.clone();
    let out = load_with_fault(cluster, faults, via, 16, 5_000, || async move {
        let t0 = Instant::now();
        fault().await;
        let now = await_takeover(cluster, before.epoch).await;
        *m.lock().expect("lock") = (t0.elapsed(), Some(now));
    })
    .await;
    let (takeover, after) = measured.lock().expect("lock").clone();
    let after = after.expect("takeover measured");
    check(cluster, faults, via, &out, what, takeover).await;
    (before, after, out.client.replays())
}

/// Arm a switch that makes the primary misbehave on `trigger`, send `trigger` under load, and
/// check that the caller's stimulus was resent to the promoted standby and answered there.
async fn trip_the_primary(
    what: &str,
    switch: fn(&Faults) -> &AtomicBool,
    trigger: TallyReq,
) -> (Arc<Faults>, InProcessCluster) {
    let faults = Arc::new(Faults::default());
    let cluster = start(&faults).await;
    let via = "a";
    let (before, after, _) = fault_under_load(&cluster, &faults, via, what, || async {
        switch(&faults).store(true, Ordering::SeqCst);
        let c = tally_client(&cluster, &faults, via);
        // The stimulus that tripped the primary is resent to the new one and answered there.
        assert_eq!(c.call_within(trigger, T_MAX).await, Ok(TallyResp::Fine));
    })
    .await;
    assert!(
        !switch(&faults).load(Ordering::SeqCst),
        "{what}: the fault happened"
    );
    assert_standby_promoted(&before, &after);
    assert_rebound(&cluster, &["a", "b", "c"], &after);
    (faults, cluster)
}

fn assert_standby_promoted(before: &UnitStatus, after: &UnitStatus) {
    assert_eq!(
        after.primary.as_ref().map(|p| p.0),
        before.standby.as_ref().map(|s| s.0),
        "the standby was promoted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panic_in_the_primary_handler_promotes_the_standby_and_loses_nothing() {
    let (_, cluster) =
        trip_the_primary("panic in handle", |f| &f.panic_armed, TallyReq::Panic).await;
    cluster.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_primary_is_noticed_by_heartbeat_and_its_standby_takes_over() {
    let (faults, cluster) =
        trip_the_primary("hung primary", |f| &f.hang_armed, TallyReq::Hang).await;
    faults.release_hung();
    cluster.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_a_whole_local_manager_promotes_its_primaries_standbys() {
    lose_the_primarys_node(CopyConfig::default(), "local manager lost").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trailing_callers_replay_what_the_lost_standby_lacked_and_lose_nothing_acknowledged() {
    let config = trailing(Flush::EachStimulus);
    lose_the_primarys_node(config, "local manager lost, trailing").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trailing_in_batches_the_new_primary_serves_again_what_its_standby_never_received() {
    // Updates leave only every 200 ms: when the node goes, the standby lacks every answer of
    // the last batch period, and the callers' replays are all that brings them back.
    let config = trailing(Flush::Batched {
        entries: usize::MAX,
        delay: Duration::from_millis(200),
    });
    let replays = lose_the_primarys_node(config, "local manager lost, trailing in batches").await;
    assert!(
        replays > 0,
        "the standby lacked answered stimuli, which were replayed"
    );
}

/// Under load, the loss of the node (its whole `LocalManager`) that runs the primary: its
/// standby is promoted, every node rebound, a new standby seeded elsewhere, nothing lost.
/// Returns how many answered stimuli the callers replayed.
async fn lose_the_primarys_node(config: CopyConfig, what: &str) -> u64 {
    let faults = Arc::new(Faults::default());
    let cluster = start_with(&faults, config).await;
    let first = tally_status(&cluster.status().await.expect("status"));
    let victim = first.primary.clone().expect("primary").1 .0;
    let survivors: Vec<&str> = ["a", "b", "c"]
        .into_iter()
        .filter(|n| *n != victim)
        .collect();
    let via = survivors[0];
    let (before, after, replays) = fault_under_load(&cluster, &faults, via, what, || async {
        cluster.kill_node(&victim).expect("kill the primary's node");
    })
    .await;
    assert_standby_promoted(&before, &after);
    assert!(after.primary.as_ref().is_some_and(|p| p.1 .0 != victim));
    assert_rebound(&cluster, &survivors, &after);
    // A new standby is placed on the remaining node and seeded.
    let ready = cluster
        .wait_until(Duration::from_secs(10), "a new standby", |units| {
            let t = tally_status(units);
            t.standby_ready && t.standby.as_ref().is_some_and(|s| s.1 .0 != victim)
        })
        .await
        .expect("a new standby is seeded");
    let t = tally_status(&ready);
    assert_ne!(
        t.primary.as_ref().map(|p| &p.1),
        t.standby.as_ref().map(|s| &s.1),
        "primary and standby on different nodes"
    );
    cluster.shutdown();
    replays
}

/// The tally's status, the nodes of its primary and standby, and the third node of the
/// cluster (a, b, c).
async fn both_copies_and_a_third_node(
    cluster: &InProcessCluster,
) -> (UnitStatus, (String, String), &'static str) {
    let t = tally_status(&cluster.status().await.expect("status"));
    let primary = t.primary.clone().expect("a primary").1 .0;
    let standby = t.standby.clone().expect("a standby").1 .0;
    let via = ["a", "b", "c"]
        .into_iter()
        .find(|n| *n != primary && *n != standby)
        .expect("a third node");
    (t, (primary, standby), via)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trailing_answers_lost_with_both_copies_are_reported_to_their_caller_not_dropped() {
    // Updates would leave only every 10 s: during this test nothing reaches the standby.
    let config = trailing(Flush::Batched {
        entries: usize::MAX,
        delay: Duration::from_secs(10),
    });
    let faults = Arc::new(Faults::default());
    let cluster = start_with(&faults, config).await;
    let (_, (primary, standby), via) = both_copies_and_a_third_node(&cluster).await;
    let client = tally_client(&cluster, &faults, via);
    for i in 0..10 {
        let answer = client
            .call_within(TallyReq::Mark(format!("m{i}")), T_MAX)
            .await;
        assert_eq!(answer, Ok(TallyResp::Marked));
    }
    assert_eq!(client.unconfirmed(), 10, "the standby has none of them");

    // Both copies go at once: no copy holds the ten marks, and the unit is unavailable.
    for node in [&primary, &standby] {
        cluster.kill_node(node).expect("a node of the unit's goes");
    }
    let reported = Instant::now();
    let mut losses = Vec::new();
    while losses.len() < 10 {
        assert!(
            reported.elapsed() < Duration::from_secs(10),
            "only {} of 10 lost answers were reported: {losses:?}",
            losses.len()
        );
        losses.extend(client.take_trailing_losses());
        tokio::time::sleep(Duration::from_millis(10)).await; // poll with a deadline
    }
    println!(
        "both copies lost: {} answered marks reported lost after {:?}: {:?}",
        losses.len(),
        reported.elapsed(),
        losses.first()
    );
    assert_eq!(client.unconfirmed(), 0, "nothing kept back after reporting");
    assert!(losses.iter().all(|l| l.reason.contains("unavailable")));
    cluster.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_unit_that_lost_both_copies_is_unavailable_until_the_operator_restores_it_empty() {
    let faults = Arc::new(Faults::default());
    let cluster = start(&faults).await;
    let (before, (primary, standby), via) = both_copies_and_a_third_node(&cluster).await;
    let client = tally_client(&cluster, &faults, via);
    let marked = client
        .call_within(TallyReq::Mark("before".into()), T_MAX)
        .await;
    assert_eq!(marked, Ok(TallyResp::Marked));

    for node in [&primary, &standby] {
        cluster.kill_node(node).expect("a node of the unit's goes");
    }
    cluster
        .wait_until(Duration::from_secs(10), "tally unavailable", |units| {
            tally_status(units).unavailable
        })
        .await
        .expect("the unit is declared unavailable");
    let refused = client.call_within(TallyReq::Dump, T_MAX).await;
    assert!(
        matches!(refused, Err(understudy::CallError::Unavailable { .. })),
        "{refused:?}"
    );

    // A node to hold a new standby, and the operator's restore.
    cluster.start_node("d").await.expect("a fourth node");
    cluster.restore("tally").expect("the restore is asked for");
    let restored = cluster
        .wait_until(Duration::from_secs(10), "tally restored", |units| {
            let t = tally_status(units);
            t.serving && t.standby_ready && t.epoch > before.epoch
        })
        .await
        .expect("the unit serves again");
    let after = tally_status(&restored);
    let dump = client.call_within(TallyReq::Dump, T_MAX).await;
    println!(
        "restored at {:?} (was {:?}): {dump:?}",
        after.epoch, before.epoch
    );
    assert_eq!(
        dump,
        Ok(TallyResp::Dump(BTreeMap::new())),
        "it starts empty"
    );
    let marked = client
        .call_within(TallyReq::Mark("after".into()), T_MAX)
        .await;
    assert_eq!(marked, Ok(TallyResp::Marked));
    cluster.shutdown();
}
