//! Real node processes on loopback ports: the `understudy` binary started three times, joined
//! into a cluster, driven under load, and one node killed with `kill -9`. The test asserts
//! lost = 0 and duplicates = 0 (the final value of each key equals its acknowledged
//! increments) and reports the takeover time it measured.
//!
//! In this step the group manager runs on the seed node, so the node killed is the key-value
//! unit's primary's node, which is not the seed.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use understudy::cluster::probe::Probe;
use understudy::runtime::NodeName;

const COOKIE: &str = "cluster-processes-test";
const KEYS: usize = 8;
const T_MAX: Duration = Duration::from_secs(5);

/// The node processes of one test; every one is killed when this is dropped, also when the
/// test panics.
struct Cluster {
    nodes: BTreeMap<String, (u16, Child)>,
}

impl Cluster {
    fn start(names: &[&str], seed: &str) -> Cluster {
        let mut cluster = Cluster {
            nodes: BTreeMap::new(),
        };
        let seed_port = free_port();
        cluster.spawn(seed, seed_port, None, names.len());
        for n in names.iter().filter(|n| **n != seed) {
            cluster.spawn(n, free_port(), Some(seed_port), names.len());
        }
        cluster
    }

    fn spawn(&mut self, name: &str, port: u16, join: Option<u16>, expect: usize) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_understudy"));
        cmd.args(["node", "--name", name, "--port", &port.to_string()])
            .args(["--cookie", COOKIE, "--expect", &expect.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(j) = join {
            cmd.args(["--join", &format!("127.0.0.1:{j}")]);
        }
        let child = cmd.spawn().expect("start a node process");
        self.nodes.insert(name.to_string(), (port, child));
    }

    fn addr(&self, name: &str) -> String {
        format!("127.0.0.1:{}", self.nodes[name].0)
    }

    /// `kill -9` the node's process.
    fn kill9(&mut self, name: &str) {
        if let Some((_, child)) = self.nodes.get_mut(name) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, child) in self.nodes.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("address").port()
}

/// kv's primary node and epoch as the seed's group manager sees them, once kv serves with a
/// ready standby.
async fn kv_placement(
    probe: &Probe,
    seed: &NodeName,
    newer_than: u64,
    limit: Duration,
) -> (NodeName, u64) {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(s) = probe.status(seed).await {
            let kv = s.units.unwrap_or_default().into_iter().find(|u| {
                u.unit.0 == "kv" && u.serving && u.standby_ready && u.epoch.0 > newer_than
            });
            if let Some(kv) = kv {
                if let Some((_, node)) = kv.primary {
                    return (node, kv.epoch.0);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_the_primarys_node_loses_and_duplicates_nothing_across_processes() {
    let mut cluster = Cluster::start(&["n1", "n2", "n3"], "n3");
    let seed = NodeName::new("n3");
    let probe = Probe::connect(&cluster.addr("n3"), COOKIE, Duration::from_secs(20))
        .await
        .expect("the probe reaches the seed");
    let (victim, epoch) = kv_placement(&probe, &seed, 0, Duration::from_secs(30)).await;
    assert_ne!(
        victim, seed,
        "precondition: kv's primary is not on the seed (which runs the group manager in this step)"
    );
    let probe = Arc::new(probe);

    // Load: callers increment keys through the seed node, which is never killed.
    let acked = Arc::new(Mutex::new(vec![0u64; KEYS]));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut callers = Vec::new();
    for w in 0..16usize {
        let (probe, acked, errors, stop, seed) = (
            probe.clone(),
            acked.clone(),
            errors.clone(),
            stop.clone(),
            seed.clone(),
        );
        callers.push(tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && i < 20_000 {
                let key = (w + i) % KEYS;
                i += 1;
                let json = format!(r#"{{"Incr":{{"key":"k{key}","by":1}}}}"#);
                let t0 = Instant::now();
                match probe.call_json(&seed, "kv", &json, Some(T_MAX)).await {
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
    let total = |a: &Arc<Mutex<Vec<u64>>>| a.lock().expect("lock").iter().sum::<u64>();
    let deadline = Instant::now() + Duration::from_secs(30);
    while total(&acked) < 300 {
        assert!(Instant::now() < deadline, "load did not start");
        tokio::time::sleep(Duration::from_millis(10)).await; // poll with a deadline
    }

    let killed = Instant::now();
    cluster.kill9(&victim.0);
    let (new_primary, new_epoch) =
        kv_placement(&probe, &seed, epoch, Duration::from_secs(30)).await;
    let takeover = killed.elapsed();
    let at_takeover = total(&acked);
    while total(&acked) < at_takeover + 300 {
        assert!(
            Instant::now() < killed + Duration::from_secs(60),
            "load did not go on after the takeover"
        );
        tokio::time::sleep(Duration::from_millis(10)).await; // poll with a deadline
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for c in callers {
        c.await.expect("caller");
    }

    let acked = acked.lock().expect("lock").clone();
    let mut lost = 0u64;
    let mut duplicated = 0u64;
    for (k, want) in acked.iter().enumerate() {
        let got = probe
            .call_json(
                &seed,
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
    let errors = errors.lock().expect("lock").clone();
    let early: Vec<_> = errors.iter().filter(|(_, took)| *took < T_MAX).collect();
    println!(
        "kill -9 of {victim}: takeover {takeover:?} (epoch {epoch} -> {new_epoch}, new primary {new_primary}), acknowledged {}, lost {lost}, duplicated {duplicated}, errors {} (before T_max: {})",
        acked.iter().sum::<u64>(),
        errors.len(),
        early.len()
    );
    assert_eq!(lost, 0, "acknowledged increments lost");
    assert_eq!(duplicated, 0, "increments applied more than once");
    assert!(early.is_empty(), "errors before T_max: {early:?}");
    assert_ne!(new_primary, victim);
}
