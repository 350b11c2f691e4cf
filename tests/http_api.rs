//! Every node's HTTP API, on real node processes on loopback ports: `GET /api/status` says what
//! `understudy status --json` says (the units with their primaries), `GET /metrics` says the
//! same in Prometheus' text format, a switchover without the node's API token is refused and
//! changes nothing, with it the unit's primary moves at the next epoch, and a change for a
//! unit or node nobody knows is a 404 naming it. The test kit gives each node an API port of
//! its own (`--http`); the default, the cluster port plus 1000, is covered by the node's
//! argument tests. The tests run one at a time.

use prometheus_parse::{LineInfo, Sample, Scrape, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use understudy::actors::UnitStatus;
use understudy::cluster::probe::Probe;
use understudy::cluster::wire::NodeStatus;
use understudy::runtime::NodeName;
use understudy::testkit::ProcessCluster;

const COOKIE: &str = "http-api-test";
const TOKEN: &str = "http-api-test-token";
/// How long a test waits for anything the cluster does.
const LIMIT: Duration = Duration::from_secs(30);

/// The multi-process tests would fight over the cores: they take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn logs_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-logs")
}

/// A cluster of `{prefix}1..=3` (the last is the seed), every node with the API token, once
/// every unit serves with a ready standby.
async fn start_cluster(prefix: &str) -> (ProcessCluster, Probe, Vec<NodeName>) {
    let names: Vec<String> = (1..=3).map(|i| format!("{prefix}{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let cluster = ProcessCluster::builder(env!("CARGO_BIN_EXE_understudy"))
        .nodes(&refs)
        .seed(&names[2])
        .cookie(COOKIE)
        .args(["--api-token", TOKEN])
        .logs(logs_dir())
        .start()
        .expect("node processes start");
    let probe = cluster.ready(LIMIT).await.expect("the cluster is ready");
    (cluster, probe, names.iter().map(NodeName::new).collect())
}

/// `http://127.0.0.1:PORT` of node `name`'s API (the test kit gives each node a port of its
/// own with `--http`).
fn api(cluster: &ProcessCluster, name: &NodeName) -> String {
    let addr = cluster.http_addr(&name.0).expect("a node of the cluster");
    format!("http://{addr}")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .expect("an HTTP client")
}

/// `GET /api/status` of the API at `base`.
async fn api_status(http: &reqwest::Client, base: &str) -> Vec<NodeStatus> {
    let response = http
        .get(format!("{base}/api/status"))
        .send()
        .await
        .expect("the API answers");
    assert_eq!(response.status(), 200);
    let body = response.text().await.expect("a body");
    serde_json::from_str(&body).expect("a JSON array of node statuses")
}

/// `POST base+path`, with `bearer` if given: the status code and the JSON body.
async fn post(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    bearer: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut request = http.post(format!("{base}{path}"));
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("the API answers");
    let status = response.status().as_u16();
    let body = response.text().await.expect("a body");
    let body = serde_json::from_str(&body).expect("a JSON body");
    (status, body)
}

/// Every unit of every group, by the committed table the node's status holds.
fn units(status: &NodeStatus) -> BTreeMap<String, UnitStatus> {
    std::iter::once(&status.control)
        .chain(status.others.iter())
        .flat_map(|v| v.units.iter())
        .map(|u| (u.unit.0.clone(), u.clone()))
        .collect()
}

/// Every sample of a Prometheus text exposition, parsed by `prometheus-parse`: name, labels,
/// value (a histogram's buckets as one sample named after the histogram). Panics on a sample
/// line that does not parse, which the parser itself would skip.
fn samples(text: &str) -> Vec<Sample> {
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let parsed = matches!(
            LineInfo::parse(line),
            LineInfo::Sample { value, .. } if value.parse::<f64>().is_ok()
        );
        assert!(parsed, "a sample line that does not parse: {line:?}");
    }
    Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("lines of a string read")
        .samples
}

/// The value of a sample of a counter, a gauge or an untyped metric.
fn number(sample: &Sample) -> f64 {
    match sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
        ref other => panic!("{} has no single value: {other:?}", sample.metric),
    }
}

/// The samples named `name` whose labels include `with`.
fn find<'a>(all: &'a [Sample], name: &str, with: &[(&str, &str)]) -> Vec<&'a Sample> {
    all.iter()
        .filter(|s| s.metric == name && with.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect()
}

/// `GET /metrics` of the API at `base`, parsed.
async fn metrics(http: &reqwest::Client, base: &str) -> Vec<Sample> {
    let response = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("the API answers");
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    samples(&response.text().await.expect("a text body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_api_status_lists_each_units_primary_as_the_cli_status_and_the_metrics_do() {
    let _turn = SERIAL.lock().await;
    let (cluster, probe, names) = start_cluster("ha").await;
    let http = client();

    // Through every node, the same nodes in the same order as `understudy status --json`.
    let cli = probe.statuses().await.expect("every node's status");
    let cli_names: Vec<&NodeName> = cli.iter().map(|s| &s.node).collect();
    for via in &names {
        let statuses = api_status(&http, &api(&cluster, via)).await;
        let listed: Vec<&NodeName> = statuses.iter().map(|s| &s.node).collect();
        assert_eq!(listed, cli_names, "GET /api/status through {via}");
        for (status, cli_status) in statuses.iter().zip(&cli) {
            // Nothing moves in this test: the tables agree with the probe's, unit for unit.
            assert_eq!(
                units(status),
                units(cli_status),
                "the table {} holds",
                status.node
            );
            assert_eq!(status.group, cli_status.group);
        }
        let table = units(&statuses[0]);
        for unit in ["kv", "ledger"] {
            let u = table
                .get(unit)
                .unwrap_or_else(|| panic!("{unit} is listed"));
            assert!(u.serving && u.standby_ready, "{unit} serves: {u:?}");
            assert!(u.primary.is_some(), "{unit} has a primary");
        }
    }

    // Each node's metrics say what its status says.
    let statuses = api_status(&http, &api(&cluster, &names[0])).await;
    for status in &statuses {
        let all = metrics(&http, &api(&cluster, &status.node)).await;
        let node = status.node.0.as_str();
        assert!(
            all.iter().all(|s| s.labels.get("node") == Some(node)),
            "every sample of {node} carries its name"
        );
        let peers = find(&all, "understudy_peers_connected", &[]);
        assert_eq!(peers.len(), 1);
        assert_eq!(number(peers[0]), (names.len() - 1) as f64, "{node}'s peers");
        let manager = find(
            &all,
            "understudy_group_manager",
            &[("group", &status.group)],
        );
        assert_eq!(manager.len(), 1);
        assert_eq!(
            number(manager[0]),
            f64::from(u8::from(status.control.runs_group_manager)),
            "{node} runs the group manager or not, as its status says"
        );
        let mut primaries_here = 0;
        for (unit, u) in units(status) {
            let epoch = find(&all, "understudy_unit_epoch", &[("unit", &unit)]);
            assert_eq!(epoch.len(), 1, "one epoch of {unit}");
            assert_eq!(
                number(epoch[0]),
                u.epoch.0 as f64,
                "{unit}'s epoch on {node}"
            );
            let (copy, at) = u.primary.clone().expect("a primary");
            let primary = find(
                &all,
                "understudy_unit_copy",
                &[("unit", &unit), ("role", "primary")],
            );
            assert_eq!(primary.len(), 1, "one primary of {unit}");
            assert_eq!(
                primary[0].labels.get("copy_node"),
                Some(at.0.as_str()),
                "{unit}'s primary"
            );
            assert_eq!(
                primary[0].labels.get("copy"),
                Some(copy.to_string().as_str())
            );
            let bound = find(&all, "understudy_name_bound", &[("unit", &unit)]);
            assert_eq!(bound.len(), 1);
            assert_eq!(number(bound[0]), 1.0, "{node}'s name table binds {unit}");
            primaries_here += usize::from(at == status.node);
        }
        let copies = find(&all, "understudy_copies", &[("role", "primary")]);
        assert_eq!(copies.len(), 1);
        assert_eq!(
            number(copies[0]),
            primaries_here as f64,
            "primaries on {node}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_switchover_without_the_token_is_refused_and_changes_nothing_and_with_it_the_primary_moves_at_the_next_epoch(
) {
    let _turn = SERIAL.lock().await;
    let (cluster, _probe, names) = start_cluster("hs").await;
    let http = client();
    let before = api_status(&http, &api(&cluster, &names[0])).await;
    let kv = units(&before[0]).remove("kv").expect("kv is listed");
    let (_, old_primary) = kv.primary.clone().expect("kv has a primary");
    // Asked through a node that does not run the group manager: the API finds it.
    let via = before
        .iter()
        .find(|s| !s.control.runs_group_manager)
        .map(|s| s.node.clone())
        .expect("a node without the manager");
    let base = api(&cluster, &via);

    for bearer in [None, Some("not-the-token")] {
        let (status, body) = post(&http, &base, "/api/units/kv/switchover", bearer).await;
        assert_eq!(status, 401, "{bearer:?}: {body}");
        let error = body["error"].as_str().expect("an error");
        assert!(error.contains("token"), "{error}");
    }
    let after_refusal = api_status(&http, &base).await;
    for s in &after_refusal {
        let still = units(s).remove("kv").expect("kv is listed");
        assert_eq!(
            (still.epoch, &still.primary),
            (kv.epoch, &kv.primary),
            "on {}",
            s.node
        );
    }

    let (status, body) = post(&http, &base, "/api/units/kv/switchover", Some(TOKEN)).await;
    assert_eq!(status, 202, "{body}");
    let deadline = Instant::now() + LIMIT;
    let moved = loop {
        let statuses = api_status(&http, &base).await;
        let now = units(&statuses[0]).remove("kv").expect("kv is listed");
        if now.epoch > kv.epoch && now.serving && now.standby_ready {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "kv did not move in time: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await; // poll with a deadline
    };
    assert_eq!(
        moved.epoch.0,
        kv.epoch.0 + 1,
        "one switchover: the refused calls changed nothing"
    );
    let (_, new_primary) = moved.primary.clone().expect("kv has a primary");
    assert_ne!(new_primary, old_primary, "the primary moved");

    // The takeover shows in the metrics of the node asked: its name table saw kv's epoch
    // change once.
    let deadline = Instant::now() + LIMIT;
    loop {
        let all = metrics(&http, &base).await;
        let epoch = find(&all, "understudy_name_epoch", &[("unit", "kv")]);
        let changes = find(
            &all,
            "understudy_name_epoch_changes_total",
            &[("unit", "kv")],
        );
        if epoch.first().map(|s| number(s)) == Some(moved.epoch.0 as f64) {
            assert_eq!(
                changes.first().map(|s| number(s)),
                Some(1.0),
                "one epoch change seen"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{via}'s name table did not follow"
        );
        tokio::time::sleep(Duration::from_millis(20)).await; // poll with a deadline
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_change_for_an_unknown_unit_or_node_is_404_naming_it() {
    let _turn = SERIAL.lock().await;
    // One node is enough: it knows the units it declares, placed or not.
    let cluster = ProcessCluster::builder(env!("CARGO_BIN_EXE_understudy"))
        .nodes(&["hu1"])
        .cookie(COOKIE)
        .args(["--api-token", TOKEN])
        .logs(logs_dir())
        .start()
        .expect("a node process starts");
    let base = api(&cluster, &NodeName::new("hu1"));
    let http = client();
    let deadline = Instant::now() + LIMIT;
    loop {
        let up = http.get(format!("{base}/api/status")).send().await;
        if up.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "the node's API did not answer");
        tokio::time::sleep(Duration::from_millis(50)).await; // poll with a deadline
    }

    for (path, name) in [
        ("/api/units/nosuch/switchover", "nosuch"),
        ("/api/nodes/nobody/drain", "nobody"),
    ] {
        let (status, body) = post(&http, &base, path, Some(TOKEN)).await;
        assert_eq!(status, 404, "{path}: {body}");
        let error = body["error"].as_str().expect("an error");
        assert!(error.contains(name), "{error}");
    }
    let (status, body) = post(
        &http,
        &base,
        "/api/units/bad%20name/switchover",
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 400, "{body}");
}
