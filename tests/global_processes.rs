//! The global manager, a unit like any other, on real node processes: a stimulus that kills
//! every copy it reaches (the key-value unit's `Poison`, standing for a bug in a handler) kills
//! the primary and then the standby promoted after it; the global manager, told of both
//! failures by the group manager, quarantines the unit. Its callers are then refused at once
//! instead of losing copy after copy; the other units serve on; and once an operator releases
//! it through the HTTP API, the unit serves again with the state of its last copy (restored
//! empty if the poison outran the seeding of every new standby). The tests run one at a
//! time.

use std::time::{Duration, Instant};
use understudy::actors::UnitStatus;
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
    let api = format!(
        "http://{}",
        cluster.http_addr(&via.0).expect("the node's API")
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .expect("an HTTP client");
    let path = format!("{api}/api/units/kv/release");
    let without = http.post(&path).send().await.expect("the API answers");
    assert_eq!(
        without.status(),
        401,
        "a release without the token is refused"
    );
    let with = http
        .post(&path)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("the API answers");
    assert_eq!(with.status(), 202, "the release is accepted");
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
