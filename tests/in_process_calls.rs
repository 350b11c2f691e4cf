//! Units that call units, in one process: a pipeline stage `front` calling a key-value unit
//! `back` across the loss of both of `back`'s copies (the degraded mode, and its end when the
//! operator restores `back`), and across the loss of a stage's primary's node.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use understudy::actors::UnitStatus;
use understudy::runtime::UnitName;
use understudy::units::{KeyValue, KvRequest, KvResponse, Stage};
use understudy::{Catalog, ClusterConfig, CopyConfig, InProcessCluster, UnitKind};

const T_MAX: Duration = Duration::from_secs(3);

fn status_of<'a>(units: &'a [UnitStatus], name: &str) -> &'a UnitStatus {
    units
        .iter()
        .find(|u| u.unit.0 == name)
        .expect("the unit is known")
}

fn nodes_of(u: &UnitStatus) -> BTreeSet<String> {
    u.primary
        .iter()
        .chain(u.standby.iter())
        .map(|(_, n)| n.0.clone())
        .collect()
}

fn incr(key: &str) -> KvRequest {
    KvRequest::Incr {
        key: key.into(),
        by: 1,
    }
}

/// Call `front` (an increment of `key`) until its answer's `degraded` is `want`, for at most
/// ten seconds; the answer, and how long it took.
async fn until_degraded_is(
    front: &understudy::UnitClient<Stage>,
    key: &str,
    want: bool,
) -> (understudy::actors::Served<KvResponse>, Duration) {
    let started = Instant::now();
    loop {
        let served = front.call_served(incr(key), T_MAX).await;
        if let Ok(s) = &served {
            if s.degraded == want {
                return (s.clone(), started.elapsed());
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "front's answers never said degraded = {want}: {served:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await; // poll with a deadline
    }
}

/// `front` (a stage passing to `back`, which it declares it calls) and `back` (key-value),
/// on nodes a, b, c, d.
async fn front_and_back() -> InProcessCluster {
    let front = Stage {
        next: Some("back".into()),
        ..Stage::default()
    };
    let catalog = Catalog::new()
        .with_unit("front", UnitKind::new(front), CopyConfig::default())
        .with_unit(
            "back",
            UnitKind::new(KeyValue::default()),
            CopyConfig::default(),
        )
        .with_calls("front", vec![UnitName::new("back")]);
    let cluster = InProcessCluster::start(catalog, &["a", "b", "c", "d"], ClusterConfig::default())
        .await
        .expect("cluster starts");
    cluster
        .wait_ready(Duration::from_secs(10))
        .await
        .expect("both units serve");
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn callers_of_a_unit_that_lost_both_copies_serve_degraded_until_it_is_restored() {
    let cluster = front_and_back().await;
    let units = cluster.status().await.expect("status");
    let (front_nodes, back_nodes) = (
        nodes_of(status_of(&units, "front")),
        nodes_of(status_of(&units, "back")),
    );
    // Placement puts each copy on the least loaded node: with four nodes and two units the
    // four copies sit on four nodes, so back's loss leaves front whole.
    assert!(
        front_nodes.is_disjoint(&back_nodes),
        "front on {front_nodes:?}, back on {back_nodes:?}"
    );
    let via = front_nodes
        .iter()
        .next()
        .expect("a node of front's")
        .clone();
    let front = cluster
        .client(&via, "front", Stage::default())
        .expect("client");
    let served = front.call_served(incr("k"), T_MAX).await.expect("served");
    assert_eq!(served.response, KvResponse::Counter(1), "back's answer");
    assert!(!served.degraded);

    // Both of back's copies go: back is unavailable, and front enters its degraded mode.
    for node in &back_nodes {
        cluster.kill_node(node).expect("a node of back's goes");
    }
    cluster
        .wait_until(Duration::from_secs(10), "back unavailable", |units| {
            status_of(units, "back").unavailable
        })
        .await
        .expect("back is declared unavailable");
    let (degraded, took) = until_degraded_is(&front, "k", true).await;
    println!(
        "front degraded {took:?} after back was declared unavailable: {:?}",
        degraded.response
    );
    assert!(
        matches!(degraded.response, KvResponse::Counter(_)),
        "degraded, front counts on its own: {:?}",
        degraded.response
    );

    // The operator restores back on a new node: front leaves its degraded mode, and its calls
    // reach back again.
    cluster.start_node("e").await.expect("a fifth node");
    cluster.restore("back").expect("restore asked for");
    cluster
        .wait_until(Duration::from_secs(10), "back restored", |units| {
            let b = status_of(units, "back");
            b.serving && b.standby_ready
        })
        .await
        .expect("back serves again");
    let (back_again, took) = until_degraded_is(&front, "j", false).await;
    println!(
        "front out of its degraded mode {took:?} after back was restored: {:?}",
        back_again.response
    );
    let back = cluster
        .client(&via, "back", KeyValue::default())
        .expect("client");
    // Back starts empty when restored: what it holds now came through front since then.
    let j = back
        .call_within(KvRequest::Get { key: "j".into() }, T_MAX)
        .await
        .expect("back answers");
    assert!(
        matches!(&j, KvResponse::Value(Some(v)) if v.parse::<u64>().is_ok_and(|n| n >= 1)),
        "the increments front passed on after the restore reached back: {j:?}"
    );
    cluster.shutdown();
}
