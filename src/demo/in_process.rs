//! The in-process demonstration: a unit pair that fails over, under load.
//!
//! Starts three nodes in this process (each a `LocalManager` with its own name table), places
//! the key-value unit `kv` (primary on one node, standby on another), drives concurrent `incr`
//! load, kills the primary's whole node part-way, and prints what happened: how long the
//! takeover took, how many increments were acknowledged, lost and applied twice.

use crate::units::{KeyValue, KvRequest, KvResponse};
use crate::{Catalog, ClusterConfig, CopyConfig, InProcessCluster, UnitKind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use understudy_actors::UnitStatus;

/// Concurrent callers.
const CALLERS: usize = 32;

fn kv_status(units: &[UnitStatus]) -> Option<UnitStatus> {
    units.iter().find(|u| u.unit.0 == "kv").cloned()
}

/// Run the demonstration and print what happened. Fails if the counter does not equal the
/// acknowledged increments.
pub async fn pair_failover() -> Result<(), Box<dyn std::error::Error>> {
    let catalog = Catalog::new().with_unit(
        "kv",
        UnitKind::new(KeyValue::default()),
        CopyConfig::default(),
    );
    let nodes = ["a", "b", "c"];
    let cluster =
        Arc::new(InProcessCluster::start(catalog, &nodes, ClusterConfig::default()).await?);
    let ready = cluster.wait_ready(Duration::from_secs(10)).await?;
    let before = kv_status(&ready).ok_or("kv was not placed")?;
    let (primary_copy, primary_node) = before.primary.clone().ok_or("kv has no primary")?;
    let (standby_copy, standby_node) = before.standby.clone().ok_or("kv has no standby")?;
    println!("kv: primary {primary_copy} on node {primary_node}, standby {standby_copy} on node {standby_node}, epoch {}", before.epoch);

    let via = nodes
        .iter()
        .find(|n| **n != primary_node.0)
        .copied()
        .ok_or("no other node")?;
    let client = cluster.client(via, "kv", KeyValue::default())?;
    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut callers = Vec::new();
    for _ in 0..CALLERS {
        let (client, acked, failed, stop) =
            (client.clone(), acked.clone(), failed.clone(), stop.clone());
        callers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match client
                    .call(KvRequest::Incr {
                        key: "hits".into(),
                        by: 1,
                    })
                    .await
                {
                    Ok(KvResponse::Counter(_)) => acked.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }

    // Let the load run, then lose the primary's node with everything on it.
    let warm = Instant::now();
    while acked.load(Ordering::Relaxed) < 2_000 && warm.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(5)).await; // poll with a deadline (10 s)
    }
    let at_fault = acked.load(Ordering::Relaxed);
    println!("killing node {primary_node} after {at_fault} acknowledged increments");
    let killed = Instant::now();
    cluster.kill_node(&primary_node.0)?;
    let after = cluster
        .wait_until(Duration::from_secs(10), "the standby promoted", |units| {
            kv_status(units).is_some_and(|u| u.serving && u.epoch > before.epoch)
        })
        .await?;
    let takeover = killed.elapsed();
    let after = kv_status(&after).ok_or("kv vanished")?;

    // Keep the load on the new primary for a while, then stop.
    let resumed = acked.load(Ordering::Relaxed);
    while acked.load(Ordering::Relaxed) < resumed + 2_000
        && killed.elapsed() < Duration::from_secs(20)
    {
        tokio::time::sleep(Duration::from_millis(5)).await; // poll with a deadline (20 s)
    }
    stop.store(true, Ordering::Relaxed);
    for c in callers {
        c.await?;
    }

    let total = match client.call(KvRequest::Get { key: "hits".into() }).await? {
        KvResponse::Value(Some(v)) => v.parse::<u64>()?,
        other => return Err(format!("unexpected answer {other:?}").into()),
    };
    let acked = acked.load(Ordering::Relaxed);
    let failed = failed.load(Ordering::Relaxed);
    println!();
    println!("takeover: {takeover:?} (standby {standby_copy} on node {standby_node} promoted to epoch {})", after.epoch);
    if let Some((copy, node)) = &after.standby {
        println!("new standby: {copy} on node {node}");
    }
    println!("increments acknowledged: {acked}");
    println!("increments failed:       {failed}");
    println!("counter value:           {total}");
    println!(
        "lost (acknowledged but not counted): {}",
        acked.saturating_sub(total)
    );
    println!(
        "applied twice or unacknowledged-but-applied: {}",
        total.saturating_sub(acked)
    );
    cluster.shutdown_shared();
    if total != acked || failed != 0 {
        return Err("the counter does not match the acknowledged increments".into());
    }
    Ok(())
}
