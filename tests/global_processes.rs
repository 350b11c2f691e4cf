//! The global manager, a unit like any other, on real node processes: a stimulus that kills
//! every copy it reaches (the key-value unit's `Poison`, standing for a bug in a handler) kills
//! the primary and then the standby promoted after it; the global manager, told of both
//! failures by the group manager, quarantines the unit. Its callers are then refused at once
//! instead of losing copy after copy; the other units serve on; and once an operator releases
//! it through the HTTP API, the unit serves again with the state of its last copy (restored
//! empty if the poison outran the seeding of every new standby).
//!
//! A node whose process is lost three times within ten minutes keeps failing: the global
//! manager excludes it from placement, and even started again it takes no copy — until an
//! operator readmits it through the API. And the global manager itself moves with `understudy
//! switchover global`, keeping what it holds. The tests run one at a time.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use understudy::actors::UnitStatus;
use understudy::cluster::control::ControlView;
use understudy::cluster::operator;
use understudy::cluster::probe::Probe;
use understudy::cluster::wire::WireAsk;
use understudy::runtime::{NodeName, UnitName};
use understudy::testkit::{other_than, units_by_name, ProcessCluster};

const COOKIE: &str = "global-processes-test";
const TOKEN: &str = "global-processes-test-token";
/// How long a test waits for anything the cluster does.
const LIMIT: Duration = Duration::from_secs(30);
/// The budget of each call.
const T_MAX: Duration = Duration::from_secs(10);

/// The multi-process tests would fight over the cores: they take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn logs_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-logs")
}

/// Polls every node's status, until [`LIMIT`], until `holds` says so of unit `unit` on each;
/// the statuses then, or `None` if that did not happen in time.
async fn on_every_node(
    probe: &Probe,
    names: &[NodeName],
    unit: &str,
    holds: impl Fn(&UnitStatus) -> bool,
) -> Option<Vec<UnitStatus>> {
    let deadline = Instant::now() + LIMIT;
    loop {
        let mut seen = Vec::new();
        for node in names {
            if let Ok(status) = probe.status(node).await {
                if let Some(u) = units_by_name(&status).remove(unit) {
                    seen.push(u);
                }
            }
        }
        if seen.len() == names.len() && seen.iter().all(&holds) {
            return Some(seen);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await; // poll with a deadline
    }
}

fn incr(by: i64) -> String {
    format!(r#"{{"Incr":{{"key":"kept","by":{by}}}}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_unit_whose_copies_both_fail_on_one_stimulus_is_quarantined_its_callers_refused_at_once_and_released_with_its_state(
) {
    let _turn = SERIAL.lock().await;
    let (builder, names) = ProcessCluster::builder(env!("CARGO_BIN_EXE_understudy"))
        .cookie(COOKIE)
        .args(["--api-token", TOKEN])
        .logs(logs_dir())
        .numbered("gq", 3);
    let cluster = builder.start().expect("node processes start");
    let probe = cluster.ready(LIMIT).await.expect("the cluster is ready");

    // The global manager runs as a unit: a primary and a ready standby on two nodes.
    let global = on_every_node(&probe, &names, "global", |u| {
        u.serving && u.standby_ready && u.primary.is_some()
    })
    .await
    .expect("the global manager serves with a ready standby");
    let (primary, standby) = (&global[0].primary, &global[0].standby);
    assert_ne!(
        primary.as_ref().map(|p| &p.1),
        standby.as_ref().map(|s| &s.1),
        "the global manager's copies run on two nodes"
    );

    let kv_before = on_every_node(&probe, &names, "kv", |u| u.serving && u.standby_ready)
        .await
        .expect("kv serves with a ready standby");
    let kv_primary_node = kv_before[0].primary.clone().expect("kv's primary").1;
    let via = other_than(&names, &kv_primary_node).expect("a node other than kv's primary's");
    let answer = probe
        .call_json(&via, "kv", &incr(5), Some(T_MAX))
        .await
        .expect("kv answers");
    assert_eq!(answer, r#"{"Counter":5}"#);

    // The poison stimulus: its caller is refused, saying the unit is quarantined.
    let sent = Instant::now();
    let poison = probe
        .call_json(&via, "kv", r#""Poison""#, Some(T_MAX))
        .await;
    let refused_after = sent.elapsed();
    let text = format!("{poison:?}");
    assert!(
        poison.is_err() && (text.contains("quarantined") || text.contains("unavailable")),
        "the poison stimulus's caller is refused (the unit quarantined, or its copies gone before): {text}"
    );
    println!("the poison stimulus's caller was refused after {refused_after:?}: {text}");

    // Every node's table says why; its copies run on (the state is kept).
    let quarantined = on_every_node(&probe, &names, "kv", |u| u.quarantined.is_some())
        .await
        .expect("every node's table holds the quarantine");
    let reason = quarantined[0].quarantined.clone().unwrap_or_default();
    assert!(
        reason.contains("both failed serving stimulus"),
        "the reason names the pattern: {reason}"
    );
    let moved = quarantined[0].epoch.0 - kv_before[0].epoch.0;
    println!(
        "quarantined at epoch {} ({moved} epochs after the poison): {reason}",
        quarantined[0].epoch.0
    );
    assert!(
        moved >= 1,
        "the poison killed the primary and a promoted standby"
    );

    // A caller is refused at once, without the stimulus being sent.
    let asked = Instant::now();
    let refused = probe.call_json(&via, "kv", &incr(1), Some(T_MAX)).await;
    let refusal_took = asked.elapsed();
    assert!(
        format!("{refused:?}").contains("quarantined"),
        "a caller of a quarantined unit is refused: {refused:?}"
    );
    assert!(
        refusal_took < T_MAX / 2,
        "the refusal comes at once, not at the end of the budget: {refusal_took:?}"
    );
    println!("a caller of the quarantined unit was refused in {refusal_took:?}");

    // The other units serve on: the global manager answered, and the ledger is untouched.
    let others = on_every_node(&probe, &names, "ledger", |u| {
        u.serving && u.quarantined.is_none()
    })
    .await;
    assert!(others.is_some(), "the ledger serves, not quarantined");

    // The release needs the API token; with it, the unit serves again with its state.
    post_with_token(&cluster, &via, "/api/units/kv/release").await;
    let released = Instant::now();
    let after = on_every_node(&probe, &names, "kv", |u| u.quarantined.is_none())
        .await
        .expect("every node's table holds the release");
    // Whether a copy holding the state outlived the poison: the standby started after the
    // first failure may not have held the state yet when the promoted one failed. If none
    // did, the unit is unavailable, and the operator restores it, empty.
    let state_kept = !after[0].unavailable;
    if !state_kept {
        operator::operate(
            &probe,
            WireAsk::Restore {
                unit: UnitName::new("kv"),
            },
        )
        .await
        .expect("the restore is taken");
    }
    on_every_node(&probe, &names, "kv", |u| {
        u.serving && u.quarantined.is_none()
    })
    .await
    .expect("kv serves after its release");
    let answer = probe
        .call_json(&via, "kv", &incr(1), Some(T_MAX))
        .await
        .expect("kv answers after its release");
    let expected = if state_kept {
        r#"{"Counter":6}"#
    } else {
        r#"{"Counter":1}"#
    };
    assert_eq!(
        answer, expected,
        "the released unit holds the state of its last copy (kept: {state_kept})"
    );
    println!(
        "released: kv answered again {:?} after the release; a copy holding its state outlived the poison: {state_kept}",
        released.elapsed()
    );
}

/// POSTs `path` to node `node`'s API: refused (`401`) without the API token, accepted
/// (`202`) with it.
async fn post_with_token(cluster: &ProcessCluster, node: &NodeName, path: &str) {
    let api = cluster.http_addr(&node.0).expect("the node's API");
    let url = format!("http://{api}{path}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .expect("an HTTP client");
    let without = http.post(&url).send().await.expect("the API answers");
    assert_eq!(
        without.status(),
        401,
        "POST {path} without the token is refused"
    );
    let with = http
        .post(&url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("the API answers");
    assert_eq!(with.status(), 202, "POST {path} with the token is accepted");
}

/// Polls node `on`'s view of its group, until [`LIMIT`], until `holds` says so; the view then,
/// or (as the error) the last view seen.
async fn table_on(
    probe: &Probe,
    on: &NodeName,
    holds: impl Fn(&ControlView) -> bool,
) -> Result<ControlView, String> {
    let deadline = Instant::now() + LIMIT;
    let mut last: Result<ControlView, String>;
    loop {
        match probe.status(on).await {
            Ok(status) if holds(&status.control) => return Ok(status.control),
            Ok(status) => last = Ok(status.control),
            Err(e) => last = Err(e.to_string()),
        }
        if Instant::now() >= deadline {
            return Err(format!("not in time; node {on} last held {last:#?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await; // poll with a deadline
    }
}

/// Whether every unit of `view` serves with a ready standby.
fn all_serve_with_ready_standbys(view: &ControlView) -> bool {
    !view.units.is_empty() && view.units.iter().all(|u| u.serving && u.standby_ready)
}

/// The units of `view` with a copy on `node`.
fn units_on(view: &ControlView, node: &NodeName) -> Vec<String> {
    view.units
        .iter()
        .filter(|u| {
            u.primary.as_ref().is_some_and(|p| &p.1 == node)
                || u.standby.as_ref().is_some_and(|s| &s.1 == node)
        })
        .map(|u| u.unit.0.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_lost_three_times_is_excluded_from_placement_even_started_again_until_readmitted() {
    let _turn = SERIAL.lock().await;
    let (builder, names) = ProcessCluster::builder(env!("CARGO_BIN_EXE_understudy"))
        .cookie(COOKIE)
        .args(["--api-token", TOKEN])
        .logs(logs_dir())
        .numbered("gx", 3);
    let mut cluster = builder.start().expect("node processes start");
    let probe = cluster.ready(LIMIT).await.expect("the cluster is ready");
    let seed = NodeName::new(cluster.seed());
    let first = table_on(&probe, &seed, all_serve_with_ready_standbys)
        .await
        .expect("every unit serves with a ready standby");
    // The node that keeps failing: neither the seed (it is restarted joining the seed) nor
    // the Raft leader (whose loss a new leader would have to notice first).
    let leader = first.leader.clone().expect("a Raft leader");
    let flaky = names
        .iter()
        .find(|n| **n != seed && **n != leader)
        .cloned()
        .expect("a node neither the seed nor the leader");
    let watcher = other_than(&names, &flaky).expect("another node");

    let started = Instant::now();
    for loss in 1..=3 {
        cluster.kill9(&flaky.0);
        let view = table_on(&probe, &watcher, |v| !v.nodes_up.contains(&flaky))
            .await
            .unwrap_or_else(|e| panic!("loss {loss}: {flaky} is counted down: {e}"));
        assert!(
            view.excluded.is_empty() || loss == 3,
            "loss {loss}: nothing is excluded before the third loss: {:?}",
            view.excluded
        );
        cluster.restart(&flaky.0).expect("the node starts again");
        // Ready again: the node counted up, one voter per running node (so the next loss
        // leaves a majority), every unit serving with a ready standby.
        cluster
            .ready_again(&probe, LIMIT)
            .await
            .unwrap_or_else(|e| panic!("loss {loss}: the cluster is ready again: {e}"));
    }
    let excluded = table_on(&probe, &watcher, |v| v.excluded.contains_key(&flaky))
        .await
        .expect("after its third loss the node is excluded");
    let reason = excluded.excluded.get(&flaky).cloned().unwrap_or_default();
    println!(
        "{flaky} excluded {:?} after its first loss: {reason}",
        started.elapsed()
    );
    assert!(
        reason.contains("lost 3 times"),
        "the reason names the pattern: {reason}"
    );

    // Up again and excluded, it takes nothing: every unit serves with both copies elsewhere.
    let view = table_on(&probe, &watcher, |v| {
        v.nodes_up.contains(&flaky) && all_serve_with_ready_standbys(v)
    })
    .await
    .expect("every unit serves with a ready standby on the other nodes");
    assert_eq!(
        units_on(&view, &flaky),
        Vec::<String>::new(),
        "no copy runs on the excluded node"
    );

    // The last other node is drained: its copies move, but their units are left without a
    // standby rather than given one on the excluded node. (A drain, not a kill: a kill so soon
    // after the restarts could fall in the Raft membership change that replaces the flaky
    // node's earlier start, which no three-member group survives.)
    let others: Vec<NodeName> = names.iter().filter(|n| **n != flaky).cloned().collect();
    let survivor = view
        .leader
        .clone()
        .filter(|l| *l != flaky)
        .unwrap_or_else(|| others[0].clone());
    let drained = others
        .iter()
        .find(|n| **n != survivor)
        .cloned()
        .expect("a third node");
    post_with_token(&cluster, &survivor, &format!("/api/nodes/{drained}/drain")).await;
    let view = table_on(&probe, &survivor, |v| {
        v.units.iter().all(|u| {
            u.serving && u.primary.as_ref().is_some_and(|p| p.1 == survivor) && u.standby.is_none()
        })
    })
    .await
    .expect("every unit serves on the survivor, without a standby");
    assert_eq!(
        units_on(&view, &flaky),
        Vec::<String>::new(),
        "no standby is placed on the excluded node: {:?}",
        view.units
    );

    // Readmitted through the API (the token needed), it takes the missing standbys.
    post_with_token(&cluster, &survivor, &format!("/api/nodes/{flaky}/readmit")).await;
    let readmitted = Instant::now();
    let view = table_on(&probe, &survivor, |v| {
        v.excluded.is_empty() && all_serve_with_ready_standbys(v)
    })
    .await
    .expect("readmitted, the node takes a ready standby of every unit");
    let standbys = units_on(&view, &flaky);
    assert_eq!(
        standbys.len(),
        view.units.len(),
        "every unit's standby runs on the readmitted node: {:?}",
        view.units
    );
    println!(
        "readmitted: {} standbys ready on {flaky} {:?} after the readmission",
        standbys.len(),
        readmitted.elapsed()
    );
}

/// `understudy ARGS` against node `api`'s HTTP API, with the token; what it printed, if it
/// succeeded.
async fn understudy(args: Vec<String>) -> Result<String, String> {
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_understudy"))
            .args(&args)
            .env("UNDERSTUDY_API_TOKEN", TOKEN)
            .stdin(Stdio::null())
            .output()
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(printed)
    } else {
        Err(printed)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_operator_moves_the_global_manager_with_a_switchover_and_it_keeps_what_it_holds() {
    let _turn = SERIAL.lock().await;
    let (builder, names) = ProcessCluster::builder(env!("CARGO_BIN_EXE_understudy"))
        .cookie(COOKIE)
        .args(["--api-token", TOKEN])
        .logs(logs_dir())
        .numbered("gs", 3);
    let cluster = builder.start().expect("node processes start");
    let probe = cluster.ready(LIMIT).await.expect("the cluster is ready");
    let before = on_every_node(&probe, &names, "global", |u| {
        u.serving && u.standby_ready && u.primary.is_some()
    })
    .await
    .expect("the global manager serves with a ready standby");
    let (epoch, old_primary, old_standby) = (
        before[0].epoch,
        before[0].primary.clone().expect("a primary").1,
        before[0].standby.clone().expect("a standby").1,
    );

    // Something for it to hold: a loss of a node no group runs, as a group manager reports
    // it (a loss alone excludes nothing).
    let report = r#"{"NodeLost":{"group":"main","node":"gs-ghost","incarnation":7,"at_ms":1000,"how":"its process ended"}}"#;
    let answer = probe
        .call_json(&names[0], "global", report, Some(T_MAX))
        .await
        .expect("the global manager takes the report");
    assert_eq!(answer, r#"{"Decisions":[]}"#);

    let api = format!(
        "http://{}",
        cluster.http_addr(&names[0].0).expect("the node's API")
    );
    let moved = Instant::now();
    let printed = understudy(vec![
        "switchover".into(),
        "--api".into(),
        api,
        "global".into(),
    ])
    .await
    .expect("understudy switchover global succeeds");
    let after = on_every_node(&probe, &names, "global", |u| {
        u.serving && u.epoch > epoch && u.primary.as_ref().is_some_and(|p| p.1 == old_standby)
    })
    .await
    .expect("the global manager's standby serves at a newer epoch");
    println!(
        "switchover global: {} -> {old_standby} at epoch {} in {:?} ({})",
        old_primary,
        after[0].epoch.0,
        moved.elapsed(),
        printed.trim()
    );

    // It holds what it held: the loss reported before the switchover.
    let status = probe
        .call_json(&names[1], "global", r#""Status""#, Some(T_MAX))
        .await
        .expect("the moved global manager answers");
    assert!(
        status.contains("gs-ghost"),
        "the moved global manager holds the loss reported before: {status}"
    );
}
