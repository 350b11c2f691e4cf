//! The bank ledger across the loss of its primary's node: every acknowledged transfer is
//! applied exactly once (each balance equals its opening balance plus the acknowledged
//! transfers), and the sum of balances never changes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use understudy::units::{Ledger, LedgerRequest, LedgerResponse};
use understudy::{Catalog, ClusterConfig, CopyConfig, InProcessCluster, UnitKind};

const ACCOUNTS: usize = 8;
const OPENING: i64 = 1_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ledger_total_is_unchanged_and_every_acknowledged_transfer_applies_once_across_a_node_loss()
{
    let catalog = Catalog::new().with_unit(
        "ledger",
        UnitKind::new(Ledger::default()),
        CopyConfig::default(),
    );
    let cluster = InProcessCluster::start(catalog, &["a", "b", "c"], ClusterConfig::default())
        .await
        .expect("cluster starts");
    let ready = cluster
        .wait_ready(Duration::from_secs(10))
        .await
        .expect("ledger serves");
    let before = ready[0].clone();
    let victim = before.primary.clone().expect("primary").1 .0;
    let via = ["a", "b", "c"]
        .into_iter()
        .find(|n| *n != victim)
        .expect("another node");
    let ledger = cluster
        .client(via, "ledger", Ledger::default())
        .expect("client");
    for i in 0..ACCOUNTS {
        let r = ledger
            .call(LedgerRequest::Open {
                account: format!("acct{i}"),
                balance: OPENING,
            })
            .await
            .expect("open");
        assert_eq!(r, LedgerResponse::Opened);
    }

    // Each worker moves money around a ring of accounts and records what was acknowledged.
    let deltas = Arc::new(Mutex::new(BTreeMap::<String, i64>::new()));
    let counts = Arc::new(Mutex::new((0u64, 0u64)));
    let mut workers = Vec::new();
    let started = Instant::now();
    for w in 0..8usize {
        let (ledger, deltas, counts) = (ledger.clone(), deltas.clone(), counts.clone());
        workers.push(tokio::spawn(async move {
            for i in 0..400usize {
                let from = format!("acct{}", (w + i) % ACCOUNTS);
                let to = format!("acct{}", (w + i + 1 + i % 3) % ACCOUNTS);
                let amount = 1 + (i % 7) as i64;
                match ledger
                    .call(LedgerRequest::Transfer {
                        from: from.clone(),
                        to: to.clone(),
                        amount,
                    })
                    .await
                {
                    Ok(LedgerResponse::Transferred) => {
                        let mut d = deltas.lock().expect("lock");
                        *d.entry(from).or_insert(0) -= amount;
                        *d.entry(to).or_insert(0) += amount;
                        counts.lock().expect("lock").0 += 1;
                    }
                    Ok(other) => panic!("transfer refused: {other:?}"),
                    Err(_) => counts.lock().expect("lock").1 += 1,
                }
            }
        }));
    }
    // Lose the primary's node once the load is under way.
    let deadline = Instant::now() + Duration::from_secs(20);
    while counts.lock().expect("lock").0 < 300 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await; // poll with a deadline
    }
    let killed = Instant::now();
    cluster.kill_node(&victim).expect("kill");
    let after = cluster
        .wait_until(
            Duration::from_secs(10),
            "the ledger's standby promoted",
            |units| units[0].serving && units[0].epoch > before.epoch,
        )
        .await
        .expect("takeover");
    let takeover = killed.elapsed();
    for w in workers {
        w.await.expect("worker");
    }
    let (acked, failed) = *counts.lock().expect("lock");

    let deltas = deltas.lock().expect("lock").clone();
    let mut wrong = Vec::new();
    for i in 0..ACCOUNTS {
        let account = format!("acct{i}");
        let expected = OPENING + deltas.get(&account).copied().unwrap_or(0);
        let got = ledger
            .call(LedgerRequest::Balance {
                account: account.clone(),
            })
            .await
            .expect("balance");
        if got != LedgerResponse::Amount(expected) {
            wrong.push((account, expected, got));
        }
    }
    let total = ledger.call(LedgerRequest::Total).await.expect("total");
    println!(
        "ledger: transfers acknowledged {acked}, failed {failed}, accounts off {}, takeover {takeover:?} (epoch {} -> {}), total {total:?}, run {:?}",
        wrong.len(),
        before.epoch,
        after[0].epoch,
        started.elapsed()
    );
    assert_eq!(
        total,
        LedgerResponse::Amount(OPENING * ACCOUNTS as i64),
        "the total never changes"
    );
    assert!(
        wrong.is_empty(),
        "balances that do not match the acknowledged transfers: {wrong:?}"
    );
    assert_eq!(failed, 0, "no caller saw an error within T_max");
    cluster.shutdown();
}
