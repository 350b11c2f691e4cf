//! Every node's HTTP API, on real node processes on loopback ports: `GET /api/status` says what
//! a probe of the cluster sees (the units with their primaries), `understudy status` (a client
//! of the API) prints the same, `GET /metrics` says the same in Prometheus' text format, a
//! switchover without the node's API token is refused and changes nothing, with it the unit's
//! primary moves at the next epoch — through the API and through `understudy switchover`,
//! likewise `understudy drain` — and a change for a unit or node nobody knows is a 404 naming
//! it. After a `kill -9` of a primary's node, every surviving node counts one takeover of each
//! unit whose primary ran there, and none of the others. The test kit gives each node an API
//! port of its own (`--http`); the default, the cluster port plus 1000, is covered by the
//! node's argument tests and the API client's. The tests run one at a time.

use prometheus_parse::{LineInfo, Sample, Scrape, Value};
use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use understudy::actors::UnitStatus;
use understudy::cluster::probe::Probe;
use understudy::cluster::wire::NodeStatus;
use understudy::runtime::NodeName;
use understudy::testkit::{units_by_name, ProcessCluster};

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

/// `understudy ARGS`, run to its end, without the API token in its environment unless `token`.
async fn understudy(args: &[&str], token: Option<&str>) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let token = token.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_understudy"));
        command
            .args(&args)
            .env_remove("UNDERSTUDY_API_TOKEN")
            .stdin(Stdio::null());
        if let Some(token) = token {
            command.env("UNDERSTUDY_API_TOKEN", token);
        }
        command.output()
    })
    .await
    .expect("the command ran")
    .expect("the binary runs")
}

/// What a command printed, both streams, for an assertion's message.
fn printed(output: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The units' rows of `understudy status`'s text: unit name to (epoch, `copy@node` of the
/// primary).
fn status_rows(text: &str) -> BTreeMap<String, (u64, String)> {
    text.lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                [unit, _strategy, "epoch", epoch, "primary", primary, ..] => {
                    Some((unit.to_string(), (epoch.parse().ok()?, primary.to_string())))
                }
                _ => None,
            }
        })
        .collect()
}

/// The unit `unit` as the committed table of the first node `GET /api/status` lists holds it.
async fn unit_now(http: &reqwest::Client, base: &str, unit: &str) -> UnitStatus {
    let statuses = api_status(http, base).await;
    units_by_name(&statuses[0])
        .remove(unit)
        .unwrap_or_else(|| panic!("{unit} is listed"))
}

/// `unit` once it serves with a ready standby at an epoch above `after`, by `GET /api/status`
/// at `base`; fails after [`LIMIT`].
async fn serving_after(
    http: &reqwest::Client,
    base: &str,
    unit: &str,
    after: understudy::runtime::Epoch,
) -> UnitStatus {
    let deadline = Instant::now() + LIMIT;
    loop {
        let now = unit_now(http, base, unit).await;
        if now.epoch > after && now.serving && now.standby_ready {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{unit} did not move in time: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await; // poll with a deadline
    }
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
                units_by_name(status),
                units_by_name(cli_status),
                "the table {} holds",
                status.node
            );
            assert_eq!(status.group, cli_status.group);
        }
        let table = units_by_name(&statuses[0]);
        for unit in ["kv", "ledger"] {
            let u = table
                .get(unit)
                .unwrap_or_else(|| panic!("{unit} is listed"));
            assert!(u.serving && u.standby_ready, "{unit} serves: {u:?}");
            assert!(u.primary.is_some(), "{unit} has a primary");
        }
    }

    // `understudy status` asks the API and prints what it answers: as JSON, the same nodes
    // with the same tables; as text, each unit's epoch and primary.
    let base = api(&cluster, &names[0]);
    let json = understudy(&["status", "--api", &base, "--json"], None).await;
    assert!(json.status.success(), "{}", printed(&json));
    let printed_statuses: Vec<NodeStatus> = String::from_utf8_lossy(&json.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let answered = api_status(&http, &base).await;
    assert_eq!(
        printed_statuses.iter().map(|s| &s.node).collect::<Vec<_>>(),
        answered.iter().map(|s| &s.node).collect::<Vec<_>>(),
        "the nodes `understudy status --json` prints"
    );
    for (printed_status, status) in printed_statuses.iter().zip(&answered) {
        assert_eq!(
            units_by_name(printed_status),
            units_by_name(status),
            "{}",
            status.node
        );
    }
    let text = understudy(&["status", "--api", &base], None).await;
    assert!(text.status.success(), "{}", printed(&text));
    let rows = status_rows(&String::from_utf8_lossy(&text.stdout));
    let table: BTreeMap<String, (u64, String)> = units_by_name(&answered[0])
        .into_iter()
        .map(|(unit, u)| {
            let (copy, at) = u.primary.expect("a primary");
            (unit, (u.epoch.0, format!("{copy}@{at}")))
        })
        .collect();
    assert_eq!(rows, table, "`understudy status`:\n{}", printed(&text));
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("runs the group manager"),
        "{}",
        printed(&text)
    );
    // Nothing listening where it is pointed: it says which address it tried, and why.
    let port = understudy::testkit::free_port().expect("a free port");
    let nowhere = format!("http://127.0.0.1:{port}");
    let refused = understudy(&["status", "--api", &nowhere], None).await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains(&nowhere) && stderr.contains("--http"),
        "{}",
        printed(&refused)
    );

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
        for (unit, u) in units_by_name(status) {
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
    let kv = units_by_name(&before[0])
        .remove("kv")
        .expect("kv is listed");
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
        let still = units_by_name(s).remove("kv").expect("kv is listed");
        assert_eq!(
            (still.epoch, &still.primary),
            (kv.epoch, &kv.primary),
            "on {}",
            s.node
        );
    }

    let (status, body) = post(&http, &base, "/api/units/kv/switchover", Some(TOKEN)).await;
    assert_eq!(status, 202, "{body}");
    let moved = serving_after(&http, &base, "kv", kv.epoch).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_switchover_and_drain_need_the_token_and_then_move_the_primaries_away() {
    let _turn = SERIAL.lock().await;
    let (cluster, _probe, names) = start_cluster("hc").await;
    let http = client();
    let base = api(&cluster, &names[0]);
    let kv = unit_now(&http, &base, "kv").await;
    let (_, old_primary) = kv.primary.clone().expect("kv has a primary");

    // Without a token it fails before asking anything, naming the flag and the variable; with
    // a wrong one the API refuses it, and says why.
    let switchover = ["switchover", "--api", &base, "kv"];
    let no_token = understudy(&switchover, None).await;
    let stderr = String::from_utf8_lossy(&no_token.stderr);
    assert!(
        !no_token.status.success()
            && stderr.contains("--token")
            && stderr.contains("UNDERSTUDY_API_TOKEN"),
        "{}",
        printed(&no_token)
    );
    let wrong = understudy(&switchover, Some("not-the-token")).await;
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        !wrong.status.success() && stderr.contains("401") && stderr.contains("token"),
        "{}",
        printed(&wrong)
    );
    let still = unit_now(&http, &base, "kv").await;
    assert_eq!(
        (still.epoch, &still.primary),
        (kv.epoch, &kv.primary),
        "refused switchovers change nothing"
    );

    // With the token (here from the environment) the unit moves to the next epoch.
    let done = understudy(&switchover, Some(TOKEN)).await;
    assert!(done.status.success(), "{}", printed(&done));
    assert!(
        String::from_utf8_lossy(&done.stdout).contains("switchover of kv asked for"),
        "{}",
        printed(&done)
    );
    let moved = serving_after(&http, &base, "kv", kv.epoch).await;
    assert_eq!(moved.epoch.0, kv.epoch.0 + 1, "one switchover");
    let (_, primary) = moved.primary.clone().expect("kv has a primary");
    assert_ne!(primary, old_primary, "the primary moved");

    // Drain kv's primary's node, the token given as a flag: every copy leaves it, and every
    // unit serves again with a ready standby elsewhere.
    let drain = [
        "drain",
        "--api",
        &base,
        "--token",
        TOKEN,
        primary.0.as_str(),
    ];
    let drained = understudy(&drain, None).await;
    assert!(drained.status.success(), "{}", printed(&drained));
    let deadline = Instant::now() + LIMIT;
    loop {
        let statuses = api_status(&http, &base).await;
        let table = units_by_name(&statuses[0]);
        let on_it = |u: &UnitStatus| {
            [&u.primary, &u.standby]
                .into_iter()
                .any(|c| c.as_ref().is_some_and(|(_, n)| n == &primary))
        };
        let settled = table
            .values()
            .all(|u| u.serving && u.standby_ready && !on_it(u));
        if settled {
            assert!(table["kv"].epoch > moved.epoch, "kv moved again");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{primary} was not drained in time: {table:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await; // poll with a deadline
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_kill_9_of_a_primarys_node_every_surviving_node_counts_one_takeover_of_each_unit_it_held(
) {
    let _turn = SERIAL.lock().await;
    let (mut cluster, _probe, names) = start_cluster("hk").await;
    let http = client();
    let before = units_by_name(&api_status(&http, &api(&cluster, &names[0])).await[0]);
    let (_, victim) = before["kv"].primary.clone().expect("kv has a primary");
    // Before any loss: every unit's takeover count is 0 on every node, and both heartbeat
    // counts are there.
    for name in &names {
        let all = metrics(&http, &api(&cluster, name)).await;
        for unit in before.keys() {
            let count = find(&all, "understudy_unit_takeovers_total", &[("unit", unit)]);
            assert_eq!(count.len(), 1, "{unit} on {name}");
            assert_eq!(number(count[0]), 0.0, "{unit} on {name}: no takeover yet");
        }
        for watched in ["copy", "node"] {
            let missed = find(
                &all,
                "understudy_heartbeats_missed_total",
                &[("watched", watched)],
            );
            assert_eq!(missed.len(), 1, "{watched} on {name}");
        }
    }

    cluster.kill9(&victim.0);
    // A unit whose primary ran on the victim was taken over once; one whose standby ran
    // there got a new standby, no takeover; so by every surviving node's copy of the table.
    let expected: BTreeMap<&str, f64> = before
        .iter()
        .map(|(unit, u)| {
            let held = u.primary.as_ref().is_some_and(|(_, n)| n == &victim);
            (unit.as_str(), f64::from(u8::from(held)))
        })
        .collect();
    let survivors: Vec<&NodeName> = names.iter().filter(|n| **n != victim).collect();
    let deadline = Instant::now() + LIMIT;
    let mut pending: Vec<&NodeName> = survivors.clone();
    while !pending.is_empty() {
        let name = pending[0];
        let all = metrics(&http, &api(&cluster, name)).await;
        let counts: BTreeMap<&str, f64> = expected
            .keys()
            .map(|unit| {
                let count = find(&all, "understudy_unit_takeovers_total", &[("unit", unit)]);
                (*unit, count.first().map_or(-1.0, |s| number(s)))
            })
            .collect();
        let kv_moved = find(&all, "understudy_unit_epoch", &[("unit", "kv")])
            .first()
            .is_some_and(|s| number(s) > before["kv"].epoch.0 as f64);
        if kv_moved && counts == expected {
            pending.remove(0);
            continue;
        }
        assert!(
            counts.values().zip(expected.values()).all(|(c, e)| c <= e),
            "more takeovers than primaries lost on {name}: {counts:?}, expected {expected:?}"
        );
        assert!(
            Instant::now() < deadline,
            "{name} did not count the takeovers in time: {counts:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await; // poll with a deadline
    }
}
