//! The web console in a real headless Chromium (Debian's `chromium`, driven over the DevTools
//! protocol): a three-node cluster of real processes, the console of a node that holds no
//! primary of `kv` opened in the browser, which shows every unit with its primary and epoch
//! and the time served against budget; then `kill -9` of `kv`'s primary's node, and the same
//! page — never reloaded — shows `kv`'s former standby as its primary at a newer epoch, the
//! takeover in its timeline, and the killed node no longer up.
//!
//! The test ends with a screenshot: into the test's temporary directory, or over
//! `docs/console.png` (the README's picture) when `UNDERSTUDY_UPDATE_SCREENSHOT=1`.
//! Without Chromium the test fails saying how to install it.

use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser, LaunchOptions, Tab};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use understudy::cluster::wire::NodeStatus;
use understudy::testkit::ProcessCluster;

const COOKIE: &str = "console-browser-test";
/// How long the test waits for anything the cluster or the page does.
const LIMIT: Duration = Duration::from_secs(60);
/// Calls to each unit before the page is opened, so that it has time against budget to show.
const CALLS: u64 = 20;
/// The call to `kv`.
const KV_INCR: &str = r#"{"Incr":{"key":"console","by":1}}"#;
/// The units the test calls, with the stimulus; the others (the global manager) serve only
/// the managers, so the page shows no time served for them.
const CALLED: [(&str, &str); 2] = [("kv", KV_INCR), ("ledger", r#""Total""#)];

fn called(unit: &str) -> bool {
    CALLED.iter().any(|(name, _)| *name == unit)
}

fn logs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-logs")
}

/// The Chromium to drive: `UNDERSTUDY_CHROMIUM`, else Debian's `/usr/bin/chromium`. Fails the
/// test, saying how to install it, when there is none.
fn chromium() -> PathBuf {
    let path = std::env::var_os("UNDERSTUDY_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.is_file(),
        "this test drives a real headless Chromium and there is none at {}: install Debian's \
         (`apt-get update && apt-get install -y chromium`, as .ci/run does), or point \
         UNDERSTUDY_CHROMIUM at a Chromium or Chrome binary",
        path.display()
    );
    path
}

/// What the page shows, read from its DOM by [`PAGE_STATE`].
#[derive(Debug, Deserialize)]
struct PageState {
    connection: String,
    via: String,
    marker: Option<String>,
    silent: String,
    units: Vec<UnitRow>,
    nodes: Vec<NodeRow>,
    timeline: Vec<TimelineEntry>,
}

#[derive(Debug, Deserialize)]
struct UnitRow {
    unit: String,
    epoch: u64,
    epoch_text: String,
    primary: String,
    primary_text: String,
    standby: String,
    standby_ready: bool,
    serving: bool,
    served: u64,
    called: u64,
}

#[derive(Debug, Deserialize)]
struct NodeRow {
    node: String,
    up: bool,
}

#[derive(Debug, Deserialize)]
struct TimelineEntry {
    unit: String,
    epoch: u64,
    from: String,
    to: String,
    text: String,
}

/// Reads the page's state from its DOM: the rows and entries by their data attributes, and the
/// text a person sees in the cells the test checks.
const PAGE_STATE: &str = r##"JSON.stringify({
  connection: document.getElementById("connection").dataset.state,
  via: document.body.dataset.node,
  marker: window.__consoleTestMarker || null,
  silent: document.getElementById("silent").textContent,
  units: Array.from(document.querySelectorAll("#units tbody tr")).map(r => ({
    unit: r.dataset.unit,
    epoch: Number(r.dataset.epoch),
    epoch_text: r.querySelector(".epoch").textContent,
    primary: r.dataset.primary,
    primary_text: r.querySelector(".primary").textContent,
    standby: r.dataset.standby,
    standby_ready: r.dataset.standbyReady === "true",
    serving: r.dataset.serving === "true",
    served: Number(r.querySelector('[data-latency="served"]').dataset.count),
    called: Number(r.querySelector('[data-latency="called"]').dataset.count),
  })),
  nodes: Array.from(document.querySelectorAll("#nodes tbody tr")).map(r => ({
    node: r.dataset.node, up: r.dataset.up === "true",
  })),
  timeline: Array.from(document.querySelectorAll("#timeline li")).map(li => ({
    unit: li.dataset.unit, epoch: Number(li.dataset.epoch), from: li.dataset.from,
    to: li.dataset.to, text: li.textContent,
  })),
})"##;

fn page_state(tab: &Tab) -> PageState {
    let value = tab
        .evaluate(PAGE_STATE, false)
        .expect("the page evaluates the script")
        .value;
    let json = value
        .as_ref()
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("the script gave no string: {value:?}"));
    serde_json::from_str(json).unwrap_or_else(|e| panic!("the page's state {json}: {e}"))
}

/// Polls the page until `done` holds, or fails after [`LIMIT`] with `what` and the last state.
fn wait_for_page(tab: &Tab, what: &str, done: impl Fn(&PageState) -> bool) -> PageState {
    let deadline = Instant::now() + LIMIT;
    loop {
        let state = page_state(tab);
        if done(&state) {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "the page did not show {what} within {LIMIT:?}; it shows {state:#?}"
        );
        std::thread::sleep(Duration::from_millis(100)); // poll with a deadline
    }
}

fn unit<'a>(state: &'a PageState, name: &str) -> Option<&'a UnitRow> {
    state.units.iter().find(|u| u.unit == name)
}

/// Every unit of every group by the committed table `status` holds: (name, epoch, primary's
/// node, standby's node).
fn units_of(status: &NodeStatus) -> Vec<(String, u64, String, String)> {
    std::iter::once(&status.control)
        .chain(status.others.iter())
        .flat_map(|v| v.units.iter())
        .map(|u| {
            let node = |c: &Option<(_, understudy::runtime::NodeName)>| {
                c.as_ref().map(|(_, n)| n.0.clone()).unwrap_or_default()
            };
            (
                u.unit.0.clone(),
                u.epoch.0,
                node(&u.primary),
                node(&u.standby),
            )
        })
        .collect()
}

fn launch(chromium: PathBuf) -> (Browser, Arc<Tab>) {
    let options = LaunchOptions::default_builder()
        .path(Some(chromium))
        .headless(true)
        // CI runs as root, where Chromium's sandbox cannot start.
        .sandbox(false)
        .window_size(Some((1360, 900)))
        .idle_browser_timeout(Duration::from_secs(600))
        .build()
        .expect("launch options");
    let browser = Browser::new(options).expect("headless Chromium starts");
    let tab = browser.new_tab().expect("a tab");
    tab.set_default_timeout(LIMIT);
    (browser, tab)
}

#[test]
fn the_console_shows_every_unit_and_then_a_takeover_the_test_causes_without_a_reload() {
    let chromium = chromium();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let mut cluster = ProcessCluster::builder(env!("CARGO_BIN_EXE_understudy"))
        .nodes(&["cb1", "cb2", "cb3"])
        .seed("cb3")
        .cookie(COOKIE)
        .logs(logs_dir())
        .start()
        .expect("node processes start");
    let probe = runtime
        .block_on(cluster.ready(LIMIT))
        .expect("the cluster is ready");
    let statuses = runtime
        .block_on(probe.statuses())
        .expect("every node's status");
    let table = units_of(&statuses[0]);
    let (_, kv_epoch, kv_primary, kv_standby) = table
        .iter()
        .find(|u| u.0 == "kv")
        .cloned()
        .expect("kv is placed");
    // The console is opened on the node that holds neither of kv's copies: it sees the
    // takeover through its name table, and stays up.
    let via = cluster
        .names()
        .into_iter()
        .find(|n| n != &kv_primary && n != &kv_standby)
        .expect("a node without a copy of kv");
    for (unit, stimulus) in CALLED {
        for _ in 0..CALLS {
            let via = understudy::runtime::NodeName::new(&via);
            runtime
                .block_on(probe.call_json(&via, unit, stimulus, Some(Duration::from_secs(5))))
                .unwrap_or_else(|e| panic!("{unit} answers {stimulus}: {e}"));
        }
    }
    probe.stop();

    let (_browser, tab) = launch(chromium);
    let url = format!("http://{}/", cluster.http_addr(&via).expect("via's API"));
    tab.navigate_to(&url).expect("the page loads");
    tab.wait_until_navigated().expect("the page is loaded");
    let title = tab.get_title().expect("a title");
    assert_eq!(title, "Understudy console");

    // Every unit with the primary and epoch the committed table holds, and time served.
    let shown = wait_for_page(
        &tab,
        "every node up, every unit with its primary and epoch",
        |s| {
            s.connection == "live"
                && s.silent.is_empty()
                && s.nodes.iter().filter(|n| n.up).count() == 3
                && table.iter().all(|(name, epoch, primary, standby)| {
                    unit(s, name).is_some_and(|u| {
                        u.epoch == *epoch
                            && &u.primary == primary
                            && &u.standby == standby
                            && u.serving
                            && (!called(name) || u.served >= CALLS)
                    })
                })
        },
    );
    assert_eq!(shown.via, via, "the page names the node serving it");
    assert_eq!(
        shown.units.len(),
        table.len(),
        "one row per unit: {shown:#?}"
    );
    for (name, epoch, primary, _) in &table {
        let row = unit(&shown, name).expect("a row");
        assert_eq!(
            row.epoch_text.trim(),
            epoch.to_string(),
            "{name}'s epoch cell"
        );
        assert!(
            row.primary_text.starts_with(primary.as_str()),
            "{name}'s primary cell: {:?}",
            row.primary_text
        );
        if called(name) {
            assert!(row.called >= CALLS, "{name}'s callers counted: {row:?}");
        }
    }
    let mut up: Vec<&str> = shown
        .nodes
        .iter()
        .filter(|n| n.up)
        .map(|n| n.node.as_str())
        .collect();
    up.sort_unstable();
    assert_eq!(up, ["cb1", "cb2", "cb3"], "every node up: {shown:#?}");
    let kv_moves_before = shown.timeline.iter().filter(|t| t.unit == "kv").count();
    // A reload would clear this.
    tab.evaluate("window.__consoleTestMarker = 'not reloaded'", false)
        .expect("the marker is set");

    // The takeover: kv's primary's node is killed.
    cluster.kill9(&kv_primary);
    let after = wait_for_page(&tab, "kv's takeover, in its row and its timeline", |s| {
        let moved = unit(s, "kv")
            .is_some_and(|u| u.epoch > kv_epoch && u.primary == kv_standby && u.serving);
        let entry = s.timeline.iter().any(|t| {
            t.unit == "kv" && t.from == kv_primary && t.to == kv_standby && t.epoch > kv_epoch
        });
        let gone = !s.nodes.iter().any(|n| n.node == kv_primary && n.up);
        moved && entry && gone
    });
    assert_eq!(
        after.marker.as_deref(),
        Some("not reloaded"),
        "the page was never reloaded"
    );
    let kv = unit(&after, "kv").expect("kv's row");
    let entries: Vec<&TimelineEntry> = after.timeline.iter().filter(|t| t.unit == "kv").collect();
    assert_eq!(
        entries.len(),
        kv_moves_before + 1,
        "one takeover of kv: {entries:#?}"
    );
    // Newest first: kv's takeover is kv's first entry, at the epoch its row shows.
    let entry = entries[0];
    assert_eq!(entry.epoch, kv.epoch, "{entry:?} and {kv:?}");
    assert_eq!(
        (entry.from.as_str(), entry.to.as_str()),
        (kv_primary.as_str(), kv_standby.as_str())
    );
    assert!(
        entry.text.contains(&format!("{kv_primary} → {kv_standby}")),
        "the entry reads {:?}",
        entry.text
    );
    assert!(
        kv.epoch_text.trim() == kv.epoch.to_string() && kv.primary_text.starts_with(&kv_standby)
    );
    assert!(
        !after.nodes.iter().any(|n| n.node == kv_primary && n.up),
        "{kv_primary} is not shown up: {:#?}",
        after.nodes
    );

    // kv's new primary serves, and the page counts it: the time against budget is live too
    // (the killed node's counts went with it).
    let probe = runtime
        .block_on(understudy::cluster::probe::Probe::connect(
            &cluster.addr(&via).expect("via's address"),
            COOKIE,
            LIMIT,
        ))
        .expect("a probe through via");
    let via_name = understudy::runtime::NodeName::new(&via);
    for _ in 0..CALLS {
        runtime
            .block_on(probe.call_json(&via_name, "kv", KV_INCR, Some(Duration::from_secs(5))))
            .unwrap_or_else(|e| panic!("kv answers after its takeover: {e}"));
    }
    probe.stop();
    // For the picture: every unit serving again with a ready standby (kv's on the node left).
    let settled = wait_for_page(
        &tab,
        "kv's new primary's time served, every unit with a ready standby",
        |s| {
            unit(s, "kv").is_some_and(|u| u.served >= CALLS)
                && s.units
                    .iter()
                    .all(|u| u.serving && !u.standby.is_empty() && u.standby_ready)
        },
    );
    assert_eq!(
        unit(&settled, "kv").map(|u| u.standby.as_str()),
        Some(via.as_str()),
        "kv's new standby is on the one node without a copy of it"
    );
    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let path = if std::env::var("UNDERSTUDY_UPDATE_SCREENSHOT").as_deref() == Ok("1") {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/console.png")
    } else {
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("console.png")
    };
    std::fs::write(&path, &png).expect("the screenshot is written");
    println!(
        "console: kv {kv_primary} -> {kv_standby} at epoch {}; screenshot {}",
        kv.epoch,
        path.display()
    );
}
