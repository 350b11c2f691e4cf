//! The shop as a cluster of three of its own node processes, written only with Understudy's
//! public test kit: the inventory serves reservations under load while its primary's node is
//! killed with `kill -9`, and afterwards the stock equals what was restocked minus the
//! reservations acknowledged — none lost, none taken twice.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use understudy::actors::ServedBy;
use understudy::cluster::probe::Probe;
use understudy::runtime::NodeName;
use understudy::testkit::{wait_for_unit, History, Outcome, ProcessCluster};

const COOKIE: &str = "shop-cluster-test";
const STOCK: u64 = 1_000_000;
const T_MAX: Duration = Duration::from_secs(3);

/// The inventory's primary node and epoch, in the table `observer` holds, once it serves with
/// a ready standby at an epoch above `newer_than`.
async fn inventory_primary(probe: &Probe, observer: &NodeName, newer_than: u64) -> (NodeName, u64) {
    let inventory = wait_for_unit(
        probe,
        observer,
        "inventory",
        newer_than,
        Duration::from_secs(30),
    )
    .await
    .expect("the inventory did not serve in time");
    let (_, node) = inventory.primary.expect("a serving unit has a primary");
    (node, inventory.epoch.0)
}

/// Calls the inventory through `via`: its answer, and which copy gave it at which epoch.
async fn call(
    probe: &Probe,
    via: &NodeName,
    json: &str,
) -> Result<(serde_json::Value, ServedBy), String> {
    let answer = probe
        .call_json_served(via, "inventory", json, Some(T_MAX))
        .await
        .map_err(|e| e.to_string())?;
    let value = serde_json::from_str(&answer.json).map_err(|e| e.to_string())?;
    Ok((value, answer.served_by))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_the_inventorys_primary_node_takes_no_reservation_twice_and_loses_none() {
    let mut cluster = ProcessCluster::builder(env!("CARGO_BIN_EXE_shop"))
        .nodes(&["s1", "s2", "s3"])
        .seed("s3")
        .cookie(COOKIE)
        .start()
        .expect("the shop's nodes start");
    let probe = Arc::new(
        cluster
            .ready(Duration::from_secs(30))
            .await
            .expect("the shop's cluster is ready"),
    );
    let seed = NodeName::new("s3");
    let (victim, epoch) = inventory_primary(&probe, &seed, 0).await;
    let via = ["s1", "s2", "s3"]
        .into_iter()
        .map(NodeName::new)
        .find(|n| n != &victim)
        .expect("another node");
    let restock = format!(r#"{{"Restock":{{"item":"widget","qty":{STOCK}}}}}"#);
    call(&probe, &via, &restock)
        .await
        .expect("the restock is answered");

    // Eight callers reserve one widget at a time until told to stop; the history records
    // every reservation and its outcome.
    let history = History::new();
    let stop = Arc::new(AtomicBool::new(false));
    let mut callers = Vec::new();
    for _ in 0..8 {
        let (probe, via) = (probe.clone(), via.clone());
        let (history, stop) = (history.clone(), stop.clone());
        callers.push(tokio::spawn(async move {
            let reserve = r#"{"Reserve":{"item":"widget","qty":1}}"#;
            while !stop.load(Ordering::SeqCst) {
                let sent = Instant::now();
                let (outcome, served_by) = match call(&probe, &via, reserve).await {
                    Ok((v, by)) if v.get("Left").is_some() => {
                        (Outcome::Answered(v.to_string()), Some(by))
                    }
                    Ok((v, _)) => (Outcome::Ignored(v.to_string()), None),
                    Err(e) => (Outcome::Failed(e), None),
                };
                history.record_served("reserve widget 1", sent, T_MAX, outcome, served_by);
            }
        }));
    }
    let wait_for = |n: u64| {
        let history = history.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while history.counts().answered < n {
                assert!(Instant::now() < deadline, "reservations stalled below {n}");
                tokio::time::sleep(Duration::from_millis(10)).await; // poll with a deadline
            }
        }
    };
    wait_for(200).await;
    let killed = Instant::now();
    cluster.kill9(&victim.0);
    let (new_primary, _) = inventory_primary(&probe, &via, epoch).await;
    let takeover = killed.elapsed();
    wait_for(history.counts().answered + 200).await;
    stop.store(true, Ordering::SeqCst);
    for c in callers {
        c.await.expect("a caller ends");
    }

    let stock = call(&probe, &via, r#"{"Stock":{"item":"widget"}}"#)
        .await
        .expect("the stock is read");
    let left = stock.0["Left"].as_u64().expect("a stock count");
    let counts = history.counts();
    let check = history.check_counter(STOCK - left);
    let primaries = history.check_primaries();
    println!(
        "kill -9 of {victim}: takeover {takeover:?} (new primary {new_primary}), {counts:?}, {check:?}, {primaries:?}"
    );
    assert_ne!(new_primary, victim);
    assert!(
        primaries.holds(),
        "not one primary per epoch: {primaries:?}"
    );
    assert!(
        primaries.epochs >= 2,
        "the answers did not span the takeover"
    );
    assert_eq!(check.lost, 0, "acknowledged reservations lost");
    assert_eq!(check.duplicated, 0, "reservations taken twice");
    assert_eq!(counts.failed, 0, "a reservation failed");
    assert_eq!(
        counts.ignored, 0,
        "a reservation was refused for lack of stock"
    );
}
