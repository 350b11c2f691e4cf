//! Units that call units, on real node processes killed with `kill -9` under load.
//!
//! - A pipeline of three units (`intake` → `enrich` → `tally`, the patent's Fig. 2A): the node
//!   of the middle unit's primary is killed while increments flow through the chain. The
//!   promoted standby of `enrich` serves its open stimuli again with the same derived call
//!   ids, so `tally` answers those from its dedupe table: every acknowledged increment shows
//!   in `tally` exactly once.
//! - A ledger split over two units (`ledger-a` holds a0..a3 and calls its peer `ledger-b`,
//!   which holds b0..b3): transfers between local and peer accounts under load, the node of
//!   `ledger-a`'s primary killed, then that of `ledger-b`'s. The sum over both units never
//!   changes, and each balance equals its opening balance plus its acknowledged transfers.
//!
//! Each test prints what it measured (acknowledged, lost, duplicated, takeover time, errors,
//! one primary per epoch) and asserts strictly. The tests run one at a time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use understudy::actors::UnitStatus;
use understudy::cluster::probe::Probe;
use understudy::demo::load::{verify, IncrLoad};
use understudy::runtime::GlobalResponse;
use understudy::runtime::NodeName;
use understudy::testkit::{wait_for_unit, History, Outcome, ProcessCluster};
use understudy::units::LedgerResponse;

const COOKIE: &str = "calls-processes-test";
/// The budget of every stimulus, as the units files below declare it.
const T_MAX: Duration = Duration::from_secs(5);
/// How long a takeover or a settling may take before the test fails.
const SETTLE: Duration = Duration::from_secs(30);

/// The multi-process tests would fight over the cores: they take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Where the nodes' logs go.
fn logs_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-logs")
}

/// Node processes named `{prefix}1..=n` (the last is the seed), started with the units file
/// `units` (written at test time), once every unit serves with a ready standby: the cluster,
/// a probe and the nodes' names.
async fn start_cluster(
    prefix: &str,
    n: usize,
    units: &str,
) -> (ProcessCluster, Arc<Probe>, Vec<NodeName>) {
    start_cluster_logging(prefix, n, units, None, &[]).await
}

/// [`start_cluster`], the nodes logging what `filter` (a `RUST_LOG` filter) says, if given,
/// and started with the further arguments `args`.
async fn start_cluster_logging(
    prefix: &str,
    n: usize,
    units: &str,
    filter: Option<&str>,
    args: &[&str],
) -> (ProcessCluster, Arc<Probe>, Vec<NodeName>) {
    let names: Vec<String> = (1..=n).map(|i| format!("{prefix}{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    std::fs::create_dir_all(logs_dir()).expect("the log directory");
    let path = logs_dir().join(format!("{prefix}-units.toml"));
    std::fs::write(&path, units).expect("the units file");
    let mut builder = ProcessCluster::builder(env!("CARGO_BIN_EXE_understudy"))
        .nodes(&refs)
        .seed(&names[n - 1])
        .cookie(COOKIE)
        .config(&path)
        .args(args.iter().copied())
        .logs(logs_dir());
    if let Some(filter) = filter {
        builder = builder.log_filter(filter);
    }
    let cluster = builder.start().expect("node processes start");
    let probe = cluster
        .ready(SETTLE)
        .await
        .expect("the cluster is ready (see target/test-logs)");
    let names = names.iter().map(NodeName::new).collect();
    (cluster, Arc::new(probe), names)
}

/// The status of `unit` once it serves at an epoch above `newer_than` with a ready standby,
/// in the table node `observer` holds.
async fn serving(probe: &Probe, observer: &NodeName, unit: &str, newer_than: u64) -> UnitStatus {
    wait_for_unit(probe, observer, unit, newer_than, SETTLE)
        .await
        .unwrap_or_else(|| {
            panic!("{unit} did not serve above epoch {newer_than} with a ready standby in time")
        })
}

/// The node of a unit's primary.
fn primary_node(unit: &UnitStatus) -> NodeName {
    unit.primary
        .as_ref()
        .map(|(_, node)| node.clone())
        .expect("a serving unit has a primary")
}

/// Whether a copy of `unit` (primary or standby) runs on `node`.
fn has_copy_on(unit: &UnitStatus, node: &NodeName) -> bool {
    [&unit.primary, &unit.standby]
        .into_iter()
        .flatten()
        .any(|(_, n)| n == node)
}

/// Waits until, in the table node `observer` holds, every unit serves with a ready standby
/// and none of its copies is on a node of `gone`; returns the units then.
async fn settled_without(probe: &Probe, observer: &NodeName, gone: &[NodeName]) -> Vec<UnitStatus> {
    let deadline = Instant::now() + SETTLE;
    loop {
        if let Ok(s) = probe.status(observer).await {
            let units = s.control.units;
            let settled = !units.is_empty()
                && units.iter().all(|u| {
                    u.serving
                        && u.standby_ready
                        && u.primary.is_some()
                        && !gone.iter().any(|g| has_copy_on(u, g))
                });
            if settled {
                return units;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the units did not settle off {gone:?} in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await; // poll with a deadline
    }
}

/// Where each unit's copies run, for the report.
fn placement(units: &[UnitStatus]) -> String {
    let copy = |c: &Option<(understudy::runtime::CopyId, NodeName)>| match c {
        Some((copy, node)) => format!("{copy}@{node}"),
        None => "-".to_string(),
    };
    units
        .iter()
        .map(|u| {
            format!(
                "{} e{} {} / {}",
                u.unit,
                u.epoch.0,
                copy(&u.primary),
                copy(&u.standby)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Polls `done` until it holds; fails after `limit` saying it waited for `what`.
async fn until(what: &str, limit: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "the load stalled: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await; // poll with a deadline
    }
}

/// The pipeline: two stages in front of a key-value unit.
const PIPELINE: &str = r#"
[[units]]
name = "intake"
kind = "stage"
calls = ["enrich"]
t_max_ms = 5000

[[units]]
name = "enrich"
kind = "stage"
calls = ["tally"]
t_max_ms = 5000

[[units]]
name = "tally"
kind = "kv"
t_max_ms = 5000
"#;

/// Keys the pipeline's load increments.
const PIPELINE_KEYS: usize = 8;
/// Increments per second into `intake`. Each stage serves nothing else while its call is out,
/// so the chain takes increments one at a time per unit (near a thousand a second here): the
/// load offers more, so `intake` always has one waiting and a call out to `enrich` at the kill
/// (the load sheds what would queue beyond its limit, and says how many).
const PIPELINE_RATE: u32 = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pipeline_stimulus_served_again_after_a_takeover_of_the_middle_unit_changes_the_last_unit_once(
) {
    let _turn = SERIAL.lock().await;
    let started = Instant::now();
    let (mut cluster, probe, names) = start_cluster("pipe", 3, PIPELINE).await;
    let seed = names[2].clone();
    let before = settled_without(&probe, &seed, &[]).await;
    let enrich = serving(&probe, &seed, "enrich", 0).await;
    let intake = serving(&probe, &seed, "intake", 0).await;
    let victim = primary_node(&enrich);
    let intake_hit = primary_node(&intake) == victim;
    let via = names
        .iter()
        .find(|n| **n != victim)
        .cloned()
        .expect("three nodes");
    let manager = probe
        .manager_node()
        .await
        .expect("a node runs the group manager");
    println!(
        "pipeline before: {}; killing {victim} (enrich's primary; intake's primary there too: {intake_hit}; the group manager's node: {}), load through {via}",
        placement(&before),
        manager == victim
    );

    let load = IncrLoad::start(
        probe.clone(),
        via.clone(),
        "intake",
        "k",
        PIPELINE_KEYS,
        PIPELINE_RATE,
        T_MAX,
    );
    until("300 acknowledged before the kill", SETTLE, || {
        load.answered_ok() >= 300
    })
    .await;

    let killed = Instant::now();
    let acked_at_kill = load.answered_ok();
    cluster.kill9(&victim.0);
    let enrich_after = serving(&probe, &via, "enrich", enrich.epoch.0).await;
    let takeover = killed.elapsed();
    let after = settled_without(&probe, &via, std::slice::from_ref(&victim)).await;
    let settled = killed.elapsed();
    assert_ne!(
        primary_node(&enrich_after),
        victim,
        "enrich's primary moved"
    );
    until("300 more acknowledged after the takeover", SETTLE, || {
        load.answered_ok() >= acked_at_kill + 300
    })
    .await;
    let history = load.history().clone();
    let totals = load.finish().await;
    let longest = history.records().iter().map(|r| r.took).max();
    println!(
        "pipeline after: {}; enrich served at epoch {} {takeover:?} after the kill, every unit settled after {settled:?}, longest call {longest:?}",
        placement(&after),
        enrich_after.epoch.0
    );

    // What enrich's new primary found open at its takeover: served again (its calls answered
    // by tally from its table, or served there for the first time).
    let new_primary = primary_node(&enrich_after);
    let reconciled = probe
        .status(&new_primary)
        .await
        .expect("the new primary's node answers")
        .budgets
        .reconciled;
    println!("enrich's new primary on {new_primary} reconciled: {reconciled:?}");
    // The stimulus intake had in flight to enrich at the kill was sent again, with its id, to
    // enrich's new primary: a pipeline stimulus replayed after a takeover of the middle unit.
    let intake_now = serving(&probe, &via, "intake", 0).await;
    let intake_node = primary_node(&intake_now);
    let intake_row = probe
        .status(&intake_node)
        .await
        .expect("intake's primary's node answers")
        .budgets
        .reconciled
        .into_iter()
        .find(|r| r.unit.0 == "intake");
    println!("intake's primary on {intake_node}: {intake_row:?}");
    if !intake_hit && !has_copy_on(&intake, &victim) {
        assert!(
            intake_row.is_some_and(|r| r.calls_redirected >= 1),
            "intake's call to enrich followed the takeover"
        );
    }

    // Read every key from the last unit, and through the chain (a Get passes through).
    let on_tally = verify(&probe, &via, "tally", "k", &totals.acked)
        .await
        .expect("read every key from tally");
    let through_intake = verify(&probe, &via, "intake", "k", &totals.acked)
        .await
        .expect("read every key through intake");
    println!(
        "through intake: lost {}, duplicated {}",
        through_intake.0, through_intake.1
    );
    totals.assert_clean(
        &format!("pipeline, kill -9 of enrich's primary's node {victim}"),
        on_tally,
        takeover,
        intake_hit,
    );
    assert_eq!(
        through_intake,
        (0, 0),
        "reads through intake disagree with the acknowledged increments"
    );
    assert!(
        totals.answered_ok >= acked_at_kill + 300,
        "the chain served after the takeover"
    );
    println!("pipeline test took {:?}", started.elapsed());
}

/// The ledger split over two units, both with in-flight knowledge.
const SPLIT_LEDGER: &str = r#"
[[units]]
name = "ledger-a"
kind = "ledger"
strategy = "inflight"
calls = ["ledger-b"]
t_max_ms = 5000

[[units]]
name = "ledger-b"
kind = "ledger"
strategy = "inflight"
t_max_ms = 5000
"#;

/// Every account's opening balance.
const OPENING: i64 = 1_000_000;
/// Accounts per ledger unit: a0..a3 in ledger-a, b0..b3 in ledger-b.
const ACCOUNTS: usize = 4;
/// Concurrent callers of transfers.
const CALLERS: usize = 8;
/// Most transfers one caller sends.
const PER_CALLER: usize = 5_000;
/// Transfers acknowledged before, between and after the kills.
const STEP: u64 = 300;

/// A small seeded generator (xorshift64*), so a failing run's choices can be replayed.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The seed of this run: `CALLS_PROCESSES_SEED` if set (to replay), else from the clock.
fn seed() -> u64 {
    std::env::var("CALLS_PROCESSES_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
        .max(1)
}

/// Which pair of accounts a transfer moves money between.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Route {
    /// From one of ledger-a's accounts to one of ledger-b's (a Deposit call).
    LocalToPeer,
    /// From one of ledger-b's accounts to one of ledger-a's (a Withdraw call).
    PeerToLocal,
    /// Between two of ledger-a's accounts (no call).
    LocalToLocal,
}

/// A random transfer: its route, from, to, amount.
fn pick(rng: &mut Rng) -> (Route, String, String, i64) {
    let i = rng.below(ACCOUNTS as u64);
    let j = rng.below(ACCOUNTS as u64);
    let amount = 1 + rng.below(100) as i64;
    match rng.below(3) {
        0 => (Route::LocalToPeer, format!("a{i}"), format!("b{j}"), amount),
        1 => (Route::PeerToLocal, format!("b{j}"), format!("a{i}"), amount),
        _ => {
            let k = (i + 1 + rng.below(ACCOUNTS as u64 - 1)) % ACCOUNTS as u64;
            (
                Route::LocalToLocal,
                format!("a{i}"),
                format!("a{k}"),
                amount,
            )
        }
    }
}

/// What the callers learned of their transfers.
#[derive(Debug, Default)]
struct Book {
    /// Per account, the sum of its acknowledged changes.
    deltas: BTreeMap<String, i64>,
    /// Per route, transfers answered `Transferred`.
    transferred: BTreeMap<Route, u64>,
    /// Answered `Refused`, with the reason (nothing changed).
    refused: Vec<String>,
    /// Reported ignored (nothing changed).
    ignored: u64,
    /// Ended in DeadlineExceeded: the outcome is unknown.
    deadline_exceeded: u64,
    /// Failed otherwise: the outcome is unknown too.
    other_failures: Vec<String>,
}

impl Book {
    fn acknowledged(&self) -> u64 {
        self.transferred.values().sum()
    }

    fn unknown(&self) -> u64 {
        self.deadline_exceeded + self.other_failures.len() as u64
    }
}

/// `{"Amount":N}` → N.
fn amount(answer: &str) -> i64 {
    match serde_json::from_str::<LedgerResponse>(answer) {
        Ok(LedgerResponse::Amount(n)) => n,
        other => panic!("expected an amount, got {answer} ({other:?})"),
    }
}

/// Calls `unit` through `via` and returns its answer; an error fails the test.
async fn call(probe: &Probe, via: &NodeName, unit: &str, json: &str) -> String {
    probe
        .call_json(via, unit, json, Some(T_MAX))
        .await
        .unwrap_or_else(|e| panic!("{unit} {json} through {via}: {e}"))
}

/// One caller: random transfers through `via` into ledger-a until `stop` or its bound.
async fn transfers(
    probe: Arc<Probe>,
    via: NodeName,
    mut rng: Rng,
    stop: Arc<AtomicBool>,
    book: Arc<Mutex<Book>>,
    history: Arc<History>,
) {
    for _ in 0..PER_CALLER {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let (route, from, to, amount) = pick(&mut rng);
        let json = format!(r#"{{"Transfer":{{"from":"{from}","to":"{to}","amount":{amount}}}}}"#);
        let what = format!("transfer {amount} {from}->{to}");
        let sent = Instant::now();
        let result = probe
            .call_json_served(&via, "ledger-a", &json, Some(T_MAX))
            .await;
        let mut book = book.lock().unwrap_or_else(|p| p.into_inner());
        let (outcome, served_by) = match result {
            Ok(answer) => {
                match serde_json::from_str::<LedgerResponse>(&answer.json) {
                    Ok(LedgerResponse::Transferred) => {
                        *book.deltas.entry(from).or_default() -= amount;
                        *book.deltas.entry(to).or_default() += amount;
                        *book.transferred.entry(route).or_default() += 1;
                    }
                    Ok(LedgerResponse::Refused(why)) => book.refused.push(why),
                    _ => panic!("{what}: unexpected answer {}", answer.json),
                }
                (Outcome::Answered(answer.json), Some(answer.served_by))
            }
            Err(e) => {
                let e = e.to_string();
                if e.contains("ignored") {
                    book.ignored += 1;
                    (Outcome::Ignored(e), None)
                } else {
                    if e.contains("within its budget") {
                        book.deadline_exceeded += 1;
                    } else {
                        book.other_failures
                            .push(format!("{what}: {e} after {:?}", sent.elapsed()));
                    }
                    (Outcome::Failed(e), None)
                }
            }
        };
        drop(book);
        history.record_served(what, sent, T_MAX, outcome, served_by);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_split_ledgers_total_is_unchanged_across_takeovers_of_both_units() {
    let _turn = SERIAL.lock().await;
    let started = Instant::now();
    // Two kills in turn: with five nodes, three (a Raft majority) remain after both.
    let (mut cluster, probe, names) = start_cluster("split", 5, SPLIT_LEDGER).await;
    let seed_node = names[4].clone();
    let before = settled_without(&probe, &seed_node, &[]).await;
    // The load goes through a node with no copy of either ledger: neither kill can hit it
    // (the second victim is ledger-b's primary then, which is its first primary or the
    // standby promoted from a first-placed copy). The global manager's copies may be anywhere.
    let ledgers: Vec<&UnitStatus> = before
        .iter()
        .filter(|u| u.unit.0.starts_with("ledger-"))
        .collect();
    let via = names
        .iter()
        .find(|n| !ledgers.iter().any(|u| has_copy_on(u, n)))
        .cloned()
        .expect("five nodes for the ledgers' four copies leave one without them");
    let a = serving(&probe, &via, "ledger-a", 0).await;
    let first_victim = primary_node(&a);
    let seed = seed();
    println!(
        "split ledger before: {}; the group manager on {}; load through {via}, seed {seed} (CALLS_PROCESSES_SEED to replay)",
        placement(&before),
        probe
            .manager_node()
            .await
            .expect("a node runs the group manager")
    );

    for (unit, prefix) in [("ledger-a", "a"), ("ledger-b", "b")] {
        for i in 0..ACCOUNTS {
            let open = format!(r#"{{"Open":{{"account":"{prefix}{i}","balance":{OPENING}}}}}"#);
            let answer = call(&probe, &via, unit, &open).await;
            assert_eq!(answer, r#""Opened""#, "open {prefix}{i} in {unit}");
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let book = Arc::new(Mutex::new(Book::default()));
    let history = History::new();
    let mut rng = Rng(seed);
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            tokio::spawn(transfers(
                probe.clone(),
                via.clone(),
                Rng(rng.next().max(1)),
                stop.clone(),
                book.clone(),
                history.clone(),
            ))
        })
        .collect();
    let acknowledged = || {
        book.lock()
            .unwrap_or_else(|p| p.into_inner())
            .acknowledged()
    };
    until("transfers before the first kill", SETTLE, || {
        acknowledged() >= STEP
    })
    .await;

    // Kill ledger-a's primary's node.
    let at_first = acknowledged();
    let killed = Instant::now();
    cluster.kill9(&first_victim.0);
    let a_after = serving(&probe, &via, "ledger-a", a.epoch.0).await;
    let first_takeover = killed.elapsed();
    let middle = settled_without(&probe, &via, std::slice::from_ref(&first_victim)).await;
    let first_settled = killed.elapsed();
    assert_ne!(
        primary_node(&a_after),
        first_victim,
        "ledger-a's primary moved"
    );
    println!(
        "kill -9 of {first_victim} (ledger-a's primary): ledger-a served at epoch {} after {first_takeover:?}, settled after {first_settled:?}: {}",
        a_after.epoch.0,
        placement(&middle)
    );
    until("transfers after the first takeover", SETTLE, || {
        acknowledged() >= at_first + STEP
    })
    .await;

    // Kill ledger-b's primary's node, wherever it is now.
    let b = middle
        .iter()
        .find(|u| u.unit.0 == "ledger-b")
        .cloned()
        .expect("ledger-b is in the table");
    let second_victim = primary_node(&b);
    assert_ne!(
        second_victim, via,
        "the load's node holds ledger-b's primary"
    );
    let at_second = acknowledged();
    let killed = Instant::now();
    cluster.kill9(&second_victim.0);
    let b_after = serving(&probe, &via, "ledger-b", b.epoch.0).await;
    let second_takeover = killed.elapsed();
    let gone = [first_victim.clone(), second_victim.clone()];
    let end = settled_without(&probe, &via, &gone).await;
    let second_settled = killed.elapsed();
    assert_ne!(
        primary_node(&b_after),
        second_victim,
        "ledger-b's primary moved"
    );
    println!(
        "kill -9 of {second_victim} (ledger-b's primary): ledger-b served at epoch {} after {second_takeover:?}, settled after {second_settled:?}: {}",
        b_after.epoch.0,
        placement(&end)
    );
    until("transfers after the second takeover", SETTLE, || {
        acknowledged() >= at_second + STEP
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for caller in callers {
        caller.await.expect("a caller panicked");
    }

    // What the ledgers hold now.
    let total_a = amount(&call(&probe, &via, "ledger-a", r#""Total""#).await);
    let total_b = amount(&call(&probe, &via, "ledger-b", r#""Total""#).await);
    let mut wrong = Vec::new();
    let book = std::mem::take(&mut *book.lock().unwrap_or_else(|p| p.into_inner()));
    for (unit, prefix) in [("ledger-a", "a"), ("ledger-b", "b")] {
        for i in 0..ACCOUNTS {
            let account = format!("{prefix}{i}");
            let json = format!(r#"{{"Balance":{{"account":"{account}"}}}}"#);
            let balance = amount(&call(&probe, &via, unit, &json).await);
            let want = OPENING + book.deltas.get(&account).copied().unwrap_or(0);
            if balance != want {
                wrong.push(format!("{account}: {balance}, acknowledged {want}"));
            }
        }
    }
    let counts = history.counts();
    let primaries = history.check_primaries();
    let longest = history.records().iter().map(|r| r.took).max();
    let mut refusals: BTreeMap<&str, u64> = BTreeMap::new();
    for why in &book.refused {
        *refusals.entry(why.as_str()).or_default() += 1;
    }
    println!(
        "split ledger: takeovers {first_takeover:?} (ledger-a) and {second_takeover:?} (ledger-b); sent {}, transferred {} {:?}, refused {refusals:?}, ignored {}, deadline exceeded {}, other failures {:?}, errors before T_max {}, late {}, longest call {longest:?}; totals {total_a} + {total_b} = {} (opened {}); balances off their acknowledged transfers: {wrong:?}; {primaries:?}",
        counts.sent,
        book.acknowledged(),
        book.transferred,
        book.ignored,
        book.deadline_exceeded,
        book.other_failures,
        counts.failed_early,
        counts.late,
        total_a + total_b,
        2 * ACCOUNTS as i64 * OPENING
    );
    assert_eq!(
        total_a + total_b,
        2 * ACCOUNTS as i64 * OPENING,
        "money was created or destroyed: ledger-a {total_a}, ledger-b {total_b}"
    );
    assert_eq!(
        counts.failed_early, 0,
        "errors before T_max: {:?}",
        book.other_failures
    );
    assert!(
        primaries.holds(),
        "not one primary per epoch: {primaries:?}"
    );
    assert!(
        primaries.epochs >= 2,
        "ledger-a's answers did not span its takeover: {primaries:?}"
    );
    for route in [Route::LocalToPeer, Route::PeerToLocal, Route::LocalToLocal] {
        assert!(
            book.transferred.get(&route).copied().unwrap_or(0) > 0,
            "no {route:?} transfer went through"
        );
    }
    if book.unknown() == 0 {
        assert!(
            wrong.is_empty(),
            "balances differ from their acknowledged transfers: {wrong:?}"
        );
    } else {
        println!(
            "{} transfers ended with an unknown outcome: only the total is checked",
            book.unknown()
        );
    }
    println!("split ledger test took {:?}", started.elapsed());
}

/// The value of `field=` in a log line's span (up to the next space or `}`), if there.
fn field<'a>(line: &'a str, field: &str) -> Option<&'a str> {
    let at = line.find(&format!("{field}="))? + field.len() + 1;
    let rest = &line[at..];
    let end = rest.find([' ', '}']).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// The lines the nodes `names` logged after `from` (each node's log length then).
fn logged_since(names: &[NodeName], from: &BTreeMap<NodeName, usize>) -> Vec<String> {
    names
        .iter()
        .flat_map(|n| {
            let text =
                std::fs::read_to_string(logs_dir().join(format!("{n}.log"))).unwrap_or_default();
            let start = from.get(n).copied().unwrap_or(0).min(text.len());
            text.get(start..)
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stimulus_thread_carries_one_trace_id_through_every_unit_it_reaches_in_spans_naming_node_unit_epoch_and_stimulus(
) {
    let _turn = SERIAL.lock().await;
    let (_cluster, probe, names) = start_cluster_logging(
        "ct",
        3,
        PIPELINE,
        Some("understudy_cluster=info,understudy_actors::copy=debug"),
        &[],
    )
    .await;
    let from: BTreeMap<NodeName, usize> = names
        .iter()
        .map(|n| {
            let len = std::fs::metadata(logs_dir().join(format!("{n}.log")))
                .map_or(0, |m| m.len() as usize);
            (n.clone(), len)
        })
        .collect();
    let answer = call(
        &probe,
        &names[0],
        "intake",
        r#"{"Incr":{"key":"traced","by":1}}"#,
    )
    .await;
    assert_eq!(answer, r#"{"Counter":1}"#, "the pipeline answers");

    // The nodes log as they serve: poll their logs until the thread's last unit is there.
    let deadline = Instant::now() + SETTLE;
    let (lines, trace) = loop {
        let lines = logged_since(&names, &from);
        let answered = |unit: &str| {
            lines
                .iter()
                .find(|l| {
                    l.contains("stimulus{")
                        && l.contains(" answered took_us=")
                        && field(l, "unit") == Some(unit)
                })
                .cloned()
        };
        if let Some(intake) = answered("intake") {
            let trace = field(&intake, "trace").unwrap_or_default().to_string();
            let everywhere = ["enrich", "tally"].iter().all(|u| {
                lines
                    .iter()
                    .any(|l| field(l, "unit") == Some(u) && field(l, "trace") == Some(&trace))
            });
            if everywhere {
                break (lines, trace);
            }
        }
        assert!(
            Instant::now() < deadline,
            "the nodes did not log the thread through every unit in time: {lines:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await; // poll with a deadline
    };
    let thread: Vec<&String> = lines
        .iter()
        .filter(|l| field(l, "trace") == Some(trace.as_str()))
        .collect();
    println!("the thread {trace} as the nodes logged it:");
    for l in &thread {
        println!("  {l}");
    }
    // Each unit's answer is logged in its span: node, unit, epoch and stimulus, one thread.
    for unit in ["intake", "enrich", "tally"] {
        let served = thread
            .iter()
            .find(|l| {
                l.contains("stimulus{")
                    && field(l, "unit") == Some(unit)
                    && l.contains(" answered took_us=")
            })
            .unwrap_or_else(|| {
                panic!("{unit}'s answer is logged in the thread {trace}: {thread:#?}")
            });
        for f in ["node", "epoch", "stimulus", "copy"] {
            assert!(
                field(served, f).is_some_and(|v| !v.is_empty()),
                "{unit}'s span names its {f}: {served}"
            );
        }
        assert!(
            names
                .iter()
                .any(|n| field(served, "node") == Some(n.0.as_str())),
            "{unit}'s span names one of the nodes: {served}"
        );
    }
    // The thread begins at intake (its trace is its stimulus's id); each call's id is the
    // stimulus id the called unit served it under.
    let span_of = |unit: &str| {
        thread
            .iter()
            .find(|l| l.contains("stimulus{") && field(l, "unit") == Some(unit))
            .and_then(|l| field(l, "stimulus"))
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        span_of("intake"),
        trace,
        "the thread is named by intake's stimulus"
    );
    for (caller, callee) in [("intake", "enrich"), ("enrich", "tally")] {
        let call = thread
            .iter()
            .find(|l| {
                l.contains("call{")
                    && field(l, "unit") == Some(caller)
                    && field(l, "callee") == Some(callee)
            })
            .and_then(|l| field(l, "call"))
            .unwrap_or_else(|| panic!("{caller}'s call of {callee} is logged in the thread"));
        assert_eq!(
            span_of(callee),
            call,
            "{callee} served {caller}'s call under the call's id"
        );
    }
}

/// The pipeline with a tight budget at its entry: 20 ms for a thread through three units.
fn tight_pipeline() -> String {
    let tight = PIPELINE.replacen("t_max_ms = 5000", "t_max_ms = 20", 1);
    assert!(
        tight.contains("name = \"intake\"\nkind = \"stage\"\ncalls = [\"enrich\"]\nt_max_ms = 20"),
        "intake's budget is the one made tight: {tight}"
    );
    tight
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stimulus_thread_that_breaks_its_budget_is_reported_to_the_global_manager_with_the_unit_that_spent_the_time(
) {
    let _turn = SERIAL.lock().await;
    // Heartbeats every 100 ms, four missed to be lost: tally's stalled copy stays far from hung.
    let args = ["--heartbeat-ms", "100", "--heartbeat-misses", "4"];
    let (_cluster, probe, names) =
        start_cluster_logging("cb", 3, &tight_pipeline(), None, &args).await;
    // tally takes 100 ms over it: five times intake's whole budget.
    let sent = Instant::now();
    let answer = call(&probe, &names[0], "intake", r#"{"Stall":{"ms":100}}"#).await;
    let took = sent.elapsed();
    assert_eq!(answer, r#""Done""#, "the thread is served, late");
    assert!(
        took >= Duration::from_millis(100),
        "it took the stall: {took:?}"
    );

    // The report reaches the global manager (through the group manager) after the answer.
    let deadline = Instant::now() + SETTLE;
    let thread = loop {
        let status = probe
            .call_json(&names[1], "global", r#""Status""#, Some(T_MAX))
            .await;
        if let Ok(json) = &status {
            if let Ok(GlobalResponse::Status(view)) = serde_json::from_str(json) {
                if let Some(t) = view.slow_threads.into_iter().find(|t| t.unit.0 == "intake") {
                    break t;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "the global manager did not hear of the slow thread in time: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await; // poll with a deadline
    };
    println!(
        "the global manager holds: {} (asked at the client: {took:?}); account {:?}",
        thread.describe(),
        thread.spent
    );
    assert_eq!(thread.kind, "stall");
    assert_eq!(thread.group, "main");
    assert_eq!(
        thread.t_max_us, 20_000,
        "the budget it broke is intake's T_max"
    );
    assert!(
        thread.took_us >= 100_000,
        "it took at least the stall: {} µs",
        thread.took_us
    );
    let units: Vec<&str> = thread.spent.iter().map(|(u, _)| u.0.as_str()).collect();
    assert_eq!(
        units,
        ["enrich", "intake", "tally"],
        "the account names every unit reached"
    );
    let most = thread.spent_most().expect("an account");
    assert_eq!(
        most.0 .0, "tally",
        "tally spent the time: {:?}",
        thread.spent
    );
    assert!(
        most.1 >= 100_000,
        "tally's share holds the stall: {:?}",
        thread.spent
    );
    let total: u64 = thread.spent.iter().map(|(_, us)| us).sum();
    assert!(
        total <= thread.took_us,
        "the account adds up to no more than the time served: {total} of {} µs",
        thread.took_us
    );
}
