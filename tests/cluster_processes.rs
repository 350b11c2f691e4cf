//! Real node processes on loopback ports: the `understudy` binary started three times, joined
//! into a cluster, driven under load, and the key-value unit's primary's node killed with
//! `kill -9`, or stopped with `SIGSTOP` past the detection time and resumed. Each test asserts
//! lost = 0 and duplicates = 0 (the final value of each key equals its acknowledged
//! increments) and reports the takeover time it measured. The tests run one at a time.
//!
//! In this step the group manager runs on the seed node, so the node faulted is the key-value
//! unit's primary's node, which is not the seed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use understudy::actors::codec::encode;
use understudy::actors::envelope::StimulusAsk;
use understudy::cluster::probe::Probe;
use understudy::cluster::wire::{WireAnswer, WireAsk};
use understudy::runtime::{ClientId, CopyId, NodeName, Seq, StimulusId, UnitName};
use understudy::testkit::ProcessCluster;
use understudy::units::KvRequest;

const COOKIE: &str = "cluster-processes-test";
const KEYS: usize = 8;
const T_MAX: Duration = Duration::from_secs(5);

/// The multi-process tests would fight over the cores: they take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// kv's primary node and epoch as the seed's group manager sees them, once kv serves with a
/// ready standby.
async fn kv_placement(
    probe: &Probe,
    seed: &NodeName,
    newer_than: u64,
    limit: Duration,
) -> (NodeName, CopyId, u64) {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(s) = probe.status(seed).await {
            let kv = s.units.unwrap_or_default().into_iter().find(|u| {
                u.unit.0 == "kv" && u.serving && u.standby_ready && u.epoch.0 > newer_than
            });
            if let Some(kv) = kv {
                if let Some((copy, node)) = kv.primary {
                    return (node, copy, kv.epoch.0);
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "kv did not serve with a ready standby in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await; // poll with a deadline
    }
}

/// Callers incrementing `KEYS` keys through one node, counting what was acknowledged.
struct Load {
    acked: Arc<Mutex<Vec<u64>>>,
    errors: Arc<Mutex<Vec<(String, Duration)>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    callers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(probe: &Arc<Probe>, via: &NodeName, workers: usize) -> Load {
        let load = Load {
            acked: Arc::new(Mutex::new(vec![0u64; KEYS])),
            errors: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            callers: Vec::new(),
        };
        let mut callers = Vec::new();
        for w in 0..workers {
            let (probe, acked, errors, stop, via) = (
                probe.clone(),
                load.acked.clone(),
                load.errors.clone(),
                load.stop.clone(),
                via.clone(),
            );
            callers.push(tokio::spawn(async move {
                let mut i = 0usize;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) && i < 20_000 {
                    let key = (w + i) % KEYS;
                    i += 1;
                    let json = format!(r#"{{"Incr":{{"key":"k{key}","by":1}}}}"#);
                    let t0 = Instant::now();
                    match probe.call_json(&via, "kv", &json, Some(T_MAX)).await {
                        Ok(answer) if answer.contains("Counter") => {
                            acked.lock().expect("lock")[key] += 1
                        }
                        Ok(other) => errors
                            .lock()
                            .expect("lock")
                            .push((format!("answer {other}"), t0.elapsed())),
                        Err(e) => errors
                            .lock()
                            .expect("lock")
                            .push((e.to_string(), t0.elapsed())),
                    }
                }
            }));
        }
        Load { callers, ..load }
    }

    fn total(&self) -> u64 {
        self.acked.lock().expect("lock").iter().sum()
    }

    /// Wait until `n` increments in all are acknowledged.
    async fn reach(&self, n: u64, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.total() < n {
            assert!(
                Instant::now() < deadline,
                "the load stalled below {n} acknowledged"
            );
            tokio::time::sleep(Duration::from_millis(10)).await; // poll with a deadline
        }
    }

    /// Stop the callers; the acknowledged increments per key, and the errors with how long
    /// each call had taken.
    async fn finish(self) -> (Vec<u64>, Vec<(String, Duration)>) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for c in self.callers {
            c.await.expect("caller");
        }
        let acked = self.acked.lock().expect("lock").clone();
        let errors = self.errors.lock().expect("lock").clone();
        (acked, errors)
    }
}

/// Read every key through `via` and compare with the acknowledged increments: (lost,
/// duplicated).
async fn lost_and_duplicated(probe: &Probe, via: &NodeName, acked: &[u64]) -> (u64, u64) {
    let mut lost = 0u64;
    let mut duplicated = 0u64;
    for (k, want) in acked.iter().enumerate() {
        let got = probe
            .call_json(
                via,
                "kv",
                &format!(r#"{{"Get":{{"key":"k{k}"}}}}"#),
                Some(T_MAX),
            )
            .await
            .expect("read a key");
        let value: u64 = got
            .trim_start_matches(r#"{"Value":""#)
            .trim_end_matches(r#""}"#)
            .parse()
            .unwrap_or_else(|_| panic!("unexpected answer {got}"));
        lost += want.saturating_sub(value);
        duplicated += value.saturating_sub(*want);
    }
    (lost, duplicated)
}

/// Start a cluster named `prefix`1..3 with seed `prefix`3, and find kv's primary.
async fn cluster_with_kv(
    prefix: &str,
) -> (
    ProcessCluster,
    Arc<Probe>,
    NodeName,
    (NodeName, CopyId),
    u64,
) {
    let names: Vec<String> = (1..=3).map(|i| format!("{prefix}{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let seed = NodeName::new(&names[2]);
    let logs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-logs");
    let cluster = ProcessCluster::start_logged(
        env!("CARGO_BIN_EXE_understudy"),
        &refs,
        &seed.0,
        COOKIE,
        Some(logs),
    )
    .expect("node processes start");
    let addr = cluster.addr(&seed.0).expect("the seed's address");
    let probe = Probe::connect(&addr, COOKIE, Duration::from_secs(20))
        .await
        .expect("the probe reaches the seed");
    let (victim, copy, epoch) = kv_placement(&probe, &seed, 0, Duration::from_secs(30)).await;
    assert_ne!(
        victim, seed,
        "precondition: kv's primary is not on the seed (which runs the group manager in this step)"
    );
    (cluster, Arc::new(probe), seed, (victim, copy), epoch)
}

fn report_and_check(
    what: &str,
    acked: &[u64],
    lost: u64,
    duplicated: u64,
    errors: &[(String, Duration)],
    takeover: Duration,
) {
    let early: Vec<_> = errors.iter().filter(|(_, took)| *took < T_MAX).collect();
    println!(
        "{what}: takeover {takeover:?}, acknowledged {}, lost {lost}, duplicated {duplicated}, errors {} (before T_max: {})",
        acked.iter().sum::<u64>(),
        errors.len(),
        early.len()
    );
    assert_eq!(lost, 0, "{what}: acknowledged increments lost");
    assert_eq!(duplicated, 0, "{what}: increments applied more than once");
    assert!(early.is_empty(), "{what}: errors before T_max: {early:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_the_primarys_node_loses_and_duplicates_nothing_across_processes() {
    let _turn = SERIAL.lock().await;
    let (mut cluster, probe, seed, (victim, _), epoch) = cluster_with_kv("k").await;
    let load = Load::start(&probe, &seed, 16);
    load.reach(300, Duration::from_secs(30)).await;

    let killed = Instant::now();
    cluster.kill9(&victim.0);
    let (new_primary, _, new_epoch) =
        kv_placement(&probe, &seed, epoch, Duration::from_secs(30)).await;
    let takeover = killed.elapsed();
    load.reach(load.total() + 300, Duration::from_secs(30))
        .await;
    let (acked, errors) = load.finish().await;
    assert_ne!(new_primary, victim);
    assert!(new_epoch > epoch);

    let (lost, duplicated) = lost_and_duplicated(&probe, &seed, &acked).await;
    report_and_check(
        &format!("kill -9 of {victim}"),
        &acked,
        lost,
        duplicated,
        &errors,
        takeover,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigstop_of_the_primarys_node_past_detection_then_sigcont_and_the_old_primary_never_answers_for_its_old_epoch(
) {
    let _turn = SERIAL.lock().await;
    let (cluster, probe, seed, (victim, old_copy), epoch) = cluster_with_kv("s").await;
    let load = Load::start(&probe, &seed, 16);
    load.reach(300, Duration::from_secs(30)).await;

    let stopped = Instant::now();
    cluster.signal(&victim.0, "STOP").expect("SIGSTOP");
    let (new_primary, _, new_epoch) =
        kv_placement(&probe, &seed, epoch, Duration::from_secs(30)).await;
    let takeover = stopped.elapsed();
    load.reach(load.total() + 300, Duration::from_secs(30))
        .await;
    let (acked, errors) = load.finish().await;
    assert_ne!(new_primary, victim);
    assert!(new_epoch > epoch);

    // Resume the old primary's node and, first thing, address a read to the old primary copy
    // itself: it must refuse (its lease lapsed, it is fenced, or it was stopped), never answer.
    cluster.signal(&victim.0, "CONT").expect("SIGCONT");
    let ask = WireAsk::Stimulus(StimulusAsk {
        unit: UnitName::new("kv"),
        copy: old_copy,
        id: StimulusId {
            client: ClientId(0x5eed),
            seq: Seq(1),
        },
        low_water: Seq(1),
        body: encode("stimulus", &KvRequest::Get { key: "k0".into() }).expect("encodes"),
    });
    let answer = probe
        .ask(&victim, &ask, T_MAX + Duration::from_secs(5))
        .await
        .expect("the resumed node answers");
    println!("the resumed old primary {old_copy} answered: {answer:?}");
    assert!(
        !matches!(answer, WireAnswer::Stimulus(Ok(_))),
        "the old primary answered for its old epoch: {answer:?}"
    );

    // Reads through the resumed node follow the rebinding to the new primary: a stale copy
    // would return the value from before the takeover, short of the increments since.
    let (lost_via_old, duplicated_via_old) = lost_and_duplicated(&probe, &victim, &acked).await;
    assert_eq!(
        (lost_via_old, duplicated_via_old),
        (0, 0),
        "reads through the resumed node saw a stale or doubled value"
    );
    let (lost, duplicated) = lost_and_duplicated(&probe, &seed, &acked).await;
    report_and_check(
        &format!("SIGSTOP of {victim}"),
        &acked,
        lost,
        duplicated,
        &errors,
        takeover,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_planned_switchover_under_load_loses_and_duplicates_nothing() {
    let _turn = SERIAL.lock().await;
    let (_cluster, probe, seed, (old, _), epoch) = cluster_with_kv("w").await;
    let load = Load::start(&probe, &seed, 16);
    load.reach(300, Duration::from_secs(30)).await;

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
    load.reach(load.total() + 300, Duration::from_secs(30))
        .await;
    let (acked, errors) = load.finish().await;
    assert_ne!(new_primary, old, "the primary moved");
    assert_eq!(new_epoch, epoch + 1);

    let (lost, duplicated) = lost_and_duplicated(&probe, &seed, &acked).await;
    report_and_check(
        "switchover of kv",
        &acked,
        lost,
        duplicated,
        &errors,
        switched,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn draining_the_primarys_node_under_load_moves_every_copy_off_it_and_loses_nothing() {
    let _turn = SERIAL.lock().await;
    let (_cluster, probe, seed, (drained, _), epoch) = cluster_with_kv("d").await;
    let load = Load::start(&probe, &seed, 16);
    load.reach(300, Duration::from_secs(30)).await;

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
            .ok()
            .and_then(|s| s.units)
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
    load.reach(load.total() + 300, Duration::from_secs(30))
        .await;
    let (acked, errors) = load.finish().await;

    let (lost, duplicated) = lost_and_duplicated(&probe, &seed, &acked).await;
    report_and_check(
        &format!("drain of {drained}"),
        &acked,
        lost,
        duplicated,
        &errors,
        drained_in,
    );
}
