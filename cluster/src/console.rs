//! The live web console every node serves at `GET /`: one page ([`PAGE`], plain HTML, CSS and
//! JavaScript, no external assets) that follows `GET /api/events`, a stream of server-sent
//! events carrying the cluster's status and the takeovers this node's name table sees. Like
//! `GET /api/status`, it only reads, and needs no token.
//!
//! ```text
//!   name table ─changed─► Timeline::record ─► last 100 takeovers ─┬─► `timeline` at connect
//!                                                                   └─► `takeover` as each happens
//!   every 250 ms: each node's status (1 s each) ─► if it changed ─────► `status`
//! ```
//!
//! | event | data |
//! | --- | --- |
//! | `timeline` | `{"node": NAME, "takeovers": [TAKEOVER, ...]}`, oldest first: the node serving the stream and the takeovers it keeps ([`TIMELINE_LEN`]); sent first, and again should a follower fall behind |
//! | `takeover` | one [`Takeover`], as this node's name table learns of it |
//! | `status` | `{"nodes": [STATUS, ...], "silent": [{"node": NAME, "error": TEXT}, ...]}`: the objects `GET /api/status` answers, of the nodes that answered, and the nodes that did not; sent at connect and whenever it changes |

use crate::http::Api;
use crate::operator::ReachNodes;
use crate::wire::{NodeStatus, WireAnswer, WireAsk};
use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::Stream;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;
use understudy_actors::{Binding, NameState, Registry};
use understudy_runtime::{Epoch, NodeName, UnitName};

/// The console's page, served at `GET /`.
pub const PAGE: &str = include_str!("console.html");

/// How many takeovers a node keeps for a console opened later.
pub const TIMELINE_LEN: usize = 100;

/// How often an event stream reads the cluster's status.
pub const STATUS_EVERY: Duration = Duration::from_millis(250);

/// How long an event stream waits for one node's status before it lists the node as silent.
pub const STATUS_WAIT: Duration = Duration::from_secs(1);

/// What the page may load: nothing from anywhere else; its own inline script and style, and
/// its event stream.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// A move of a unit to a newer epoch, as this node's name table saw it: a takeover, a planned
/// switchover or a restore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Takeover {
    /// Its place in this node's timeline, from 1 (the page uses it to tell entries apart).
    pub seq: u64,
    /// The unit.
    pub unit: UnitName,
    /// The epoch it moved to.
    pub epoch: Epoch,
    /// Its primary before, as this node last saw it bound (`None`: this node never saw it
    /// bound before).
    pub old_primary: Option<Binding>,
    /// Its primary now.
    pub new_primary: Binding,
    /// When this node's name table learned of it, in milliseconds since the Unix epoch by
    /// this node's clock.
    pub at_ms: u64,
}

/// What a unit was last seen as.
#[derive(Debug)]
struct Seen {
    epoch: Epoch,
    bound: Option<Binding>,
}

/// The takeovers seen in successive snapshots of a name table: each unit's binding at a newer
/// epoch than the last seen is one, a unit's first state is none. Keeps the last
/// [`TIMELINE_LEN`].
#[derive(Debug, Default)]
pub struct TakeoverLog {
    seen: BTreeMap<UnitName, Seen>,
    recent: VecDeque<Takeover>,
    last_seq: u64,
}

impl TakeoverLog {
    /// Reads a snapshot of the name table taken at `at_ms`; returns the takeovers it shows
    /// that earlier snapshots did not, and keeps them.
    pub fn observe(&mut self, names: &[(UnitName, NameState)], at_ms: u64) -> Vec<Takeover> {
        let mut new = Vec::new();
        for (unit, state) in names {
            let bound = match state {
                NameState::Bound(b) => Some(b),
                NameState::Rebinding { .. } | NameState::Unavailable { .. } => None,
            };
            let Some(seen) = self.seen.get_mut(unit) else {
                let seen = Seen {
                    epoch: state.epoch(),
                    bound: bound.cloned(),
                };
                self.seen.insert(unit.clone(), seen);
                continue;
            };
            if let Some(b) = bound.filter(|b| b.epoch > seen.epoch) {
                self.last_seq += 1;
                new.push(Takeover {
                    seq: self.last_seq,
                    unit: unit.clone(),
                    epoch: b.epoch,
                    old_primary: seen.bound.clone(),
                    new_primary: b.clone(),
                    at_ms,
                });
            }
            seen.epoch = seen.epoch.max(state.epoch());
            if let Some(b) = bound {
                seen.bound = Some(b.clone());
            }
        }
        for t in &new {
            if self.recent.len() == TIMELINE_LEN {
                self.recent.pop_front();
            }
            self.recent.push_back(t.clone());
        }
        new
    }

    /// The takeovers kept, oldest first.
    pub fn recent(&self) -> Vec<Takeover> {
        self.recent.iter().cloned().collect()
    }
}

/// A node's timeline of takeovers, shared by its event streams: the log, and a channel that
/// tells every stream of each new entry.
#[derive(Debug)]
pub struct Timeline {
    log: Mutex<TakeoverLog>,
    live: broadcast::Sender<Takeover>,
}

impl Default for Timeline {
    fn default() -> Self {
        Self::new()
    }
}

fn lock(m: &Mutex<TakeoverLog>) -> std::sync::MutexGuard<'_, TakeoverLog> {
    // A poisoned lock only means an observer panicked mid-read; the log stays usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Milliseconds since the Unix epoch by this node's clock (0 for a clock set before 1970).
fn unix_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

impl Timeline {
    /// An empty timeline.
    pub fn new() -> Self {
        let (live, _) = broadcast::channel(TIMELINE_LEN);
        Timeline {
            log: Mutex::new(TakeoverLog::default()),
            live,
        }
    }

    /// Reads a snapshot of the name table taken at `at_ms` and tells every follower of the
    /// takeovers it shows.
    pub fn observe(&self, names: &[(UnitName, NameState)], at_ms: u64) {
        let mut log = lock(&self.log);
        for t in log.observe(names, at_ms) {
            // No follower is no error: the log keeps it.
            let _ = self.live.send(t);
        }
    }

    /// The takeovers kept, oldest first, and a receiver of every later one: none is in both,
    /// none is in neither.
    pub fn follow(&self) -> (Vec<Takeover>, broadcast::Receiver<Takeover>) {
        let log = lock(&self.log);
        (log.recent(), self.live.subscribe())
    }

    /// Follows `registry`, the node's name table, for as long as it lives: each time it
    /// changes, reads it.
    pub async fn record(self: Arc<Self>, registry: Registry) {
        let mut changed = registry.subscribe();
        loop {
            changed.borrow_and_update();
            self.observe(&registry.snapshot(), unix_ms());
            if changed.changed().await.is_err() {
                return;
            }
        }
    }
}

/// A node that did not answer for its status in time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silent {
    /// The node.
    pub node: NodeName,
    /// Why there is no status.
    pub error: String,
}

/// The data of a `status` event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The status of every node that answered, in the order of their names: the objects
    /// `GET /api/status` answers.
    pub nodes: Vec<NodeStatus>,
    /// The nodes reachable a moment ago that did not answer within [`STATUS_WAIT`].
    pub silent: Vec<Silent>,
}

/// Every reachable node's status, asked of all at once and each within [`STATUS_WAIT`].
pub async fn cluster_status(reach: &impl ReachNodes) -> ClusterStatus {
    let nodes = reach.nodes();
    let asks = nodes
        .iter()
        .map(|n| reach.ask(n, &WireAsk::Status, STATUS_WAIT));
    let answers = futures_util::future::join_all(asks).await;
    let mut status = ClusterStatus::default();
    for (node, answer) in nodes.into_iter().zip(answers) {
        match answer {
            Ok(WireAnswer::Status(s)) => status.nodes.push(*s),
            Ok(_) => status.silent.push(Silent {
                node,
                error: "answered something other than its status".into(),
            }),
            Err(e) => status.silent.push(Silent {
                node,
                error: e.to_string(),
            }),
        }
    }
    status
}

/// `GET /`: the page.
pub(crate) async fn page() -> Response {
    let headers = [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];
    (headers, PAGE).into_response()
}

/// The state of one event stream.
struct Feed<R> {
    api: Arc<Api<R>>,
    takeovers: broadcast::Receiver<Takeover>,
    every: tokio::time::Interval,
    last_status: Option<String>,
    queued: VecDeque<Event>,
}

/// An event named `name` whose data is `data` as JSON.
fn json_event(name: &str, data: &impl Serialize) -> Event {
    match serde_json::to_string(data) {
        Ok(json) => Event::default().event(name).data(json),
        Err(e) => Event::default()
            .event("error")
            .data(format!("the {name} event did not encode: {e}")),
    }
}

impl<R: ReachNodes> Feed<R> {
    fn new(api: Arc<Api<R>>) -> Self {
        let (recent, takeovers) = api.timeline.follow();
        let mut every = tokio::time::interval(STATUS_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut feed = Feed {
            api,
            takeovers,
            every,
            last_status: None,
            queued: VecDeque::new(),
        };
        feed.queue_timeline(recent);
        feed
    }

    fn queue_timeline(&mut self, takeovers: Vec<Takeover>) {
        let data = serde_json::json!({ "node": self.api.me, "takeovers": takeovers });
        self.queued.push_back(json_event("timeline", &data));
    }

    /// The next event: what is queued, else the next takeover or changed status.
    async fn next_event(&mut self) -> Event {
        loop {
            if let Some(event) = self.queued.pop_front() {
                return event;
            }
            tokio::select! {
                got = self.takeovers.recv() => match got {
                    Ok(t) => self.queued.push_back(json_event("takeover", &t)),
                    // Fallen behind (or, which cannot be while the timeline lives, closed):
                    // the whole timeline again, and follow on from there.
                    Err(_) => {
                        let (recent, takeovers) = self.api.timeline.follow();
                        self.takeovers = takeovers;
                        self.queue_timeline(recent);
                    }
                },
                _ = self.every.tick() => {
                    let status = cluster_status(&self.api.reach).await;
                    let event = json_event("status", &status);
                    let json = serde_json::to_string(&status).ok();
                    if json.is_none() || json != self.last_status {
                        self.last_status = json;
                        self.queued.push_back(event);
                    }
                }
            }
        }
    }
}

/// `GET /api/events`: the console's event stream (see the module's table).
pub(crate) async fn events<R: ReachNodes + 'static>(
    State(api): State<Arc<Api<R>>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = futures_util::stream::unfold(Feed::new(api), |mut feed| async move {
        let event = feed.next_event().await;
        Some((Ok(event), feed))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use understudy_runtime::CopyId;

    fn bound(node: &str, copy: u64, epoch: u64) -> NameState {
        NameState::Bound(Binding {
            node: NodeName::new(node),
            copy: CopyId(copy),
            epoch: Epoch(epoch),
        })
    }

    fn table(states: &[(&str, NameState)]) -> Vec<(UnitName, NameState)> {
        states
            .iter()
            .map(|(u, s)| (UnitName::new(*u), s.clone()))
            .collect()
    }

    fn binding(state: &NameState) -> Binding {
        match state {
            NameState::Bound(b) => b.clone(),
            other => panic!("not bound: {other:?}"),
        }
    }

    #[test]
    fn a_binding_at_a_newer_epoch_is_one_takeover_from_the_last_primary_seen_bound() {
        let mut log = TakeoverLog::default();
        let (kv1, kv2) = (bound("n1", 1, 3), bound("n2", 2, 4));
        assert!(log.observe(&table(&[("kv", kv1.clone())]), 10).is_empty());
        assert!(log.observe(&table(&[("kv", kv1.clone())]), 11).is_empty());
        let rebinding = NameState::Rebinding { epoch: Epoch(3) };
        assert!(log.observe(&table(&[("kv", rebinding)]), 12).is_empty());
        let moved = log.observe(&table(&[("kv", kv2.clone())]), 13);
        let expected = Takeover {
            seq: 1,
            unit: UnitName::new("kv"),
            epoch: Epoch(4),
            old_primary: Some(binding(&kv1)),
            new_primary: binding(&kv2),
            at_ms: 13,
        };
        assert_eq!(moved, vec![expected.clone()]);
        assert!(log.observe(&table(&[("kv", kv2)]), 14).is_empty());
        assert_eq!(log.recent(), vec![expected]);
    }

    #[test]
    fn a_unit_first_seen_is_no_takeover_and_one_first_seen_unbound_moves_from_nobody() {
        let mut log = TakeoverLog::default();
        let first = table(&[
            ("kv", bound("n1", 1, 7)),
            ("ledger", NameState::Rebinding { epoch: Epoch(2) }),
        ]);
        assert!(log.observe(&first, 1).is_empty());
        let moved = log.observe(&table(&[("ledger", bound("n3", 5, 3))]), 2);
        assert_eq!(moved.len(), 1);
        assert_eq!(moved[0].old_primary, None);
        assert_eq!(moved[0].new_primary.node, NodeName::new("n3"));
        // A unit the table never held before is a first sight too.
        assert!(log
            .observe(&table(&[("new", bound("n2", 9, 5))]), 3)
            .is_empty());
    }

    #[test]
    fn the_log_keeps_the_last_takeovers_only_numbered_in_order() {
        let mut log = TakeoverLog::default();
        for epoch in 1..=(TIMELINE_LEN as u64 + 5) {
            log.observe(&table(&[("kv", bound("n1", epoch, epoch))]), epoch);
        }
        let recent = log.recent();
        assert_eq!(recent.len(), TIMELINE_LEN);
        assert_eq!(recent.last().map(|t| t.seq), Some(TIMELINE_LEN as u64 + 4));
        assert!(recent.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
    }

    #[tokio::test]
    async fn a_follower_gets_what_was_kept_and_then_each_new_takeover_once() {
        let timeline = Timeline::new();
        timeline.observe(&table(&[("kv", bound("n1", 1, 1))]), 1);
        timeline.observe(&table(&[("kv", bound("n2", 2, 2))]), 2);
        let (kept, mut live) = timeline.follow();
        assert_eq!(kept.iter().map(|t| t.seq).collect::<Vec<_>>(), vec![1]);
        timeline.observe(&table(&[("kv", bound("n1", 3, 3))]), 3);
        let next = live.recv().await.expect("the next takeover");
        assert_eq!((next.seq, next.epoch), (2, Epoch(3)));
        assert!(live.try_recv().is_err(), "nothing twice");
    }

    #[tokio::test]
    async fn recording_follows_the_name_table_as_it_changes() {
        let registry = Registry::new();
        let kv = UnitName::new("kv");
        let update = |state| understudy_actors::registry::NameUpdate {
            unit: kv.clone(),
            state,
        };
        registry.apply(update(bound("n1", 1, 1)));
        let timeline = Arc::new(Timeline::new());
        // Seen before the recording starts, so that the next change is a move, not a first
        // sight.
        timeline.observe(&registry.snapshot(), 0);
        let recording = tokio::spawn(timeline.clone().record(registry.clone()));
        let (_, mut live) = timeline.follow();
        registry.apply(update(bound("n2", 2, 2)));
        let moved = tokio::time::timeout(Duration::from_secs(5), live.recv())
            .await
            .expect("in time")
            .expect("a takeover");
        assert_eq!(moved.old_primary.map(|b| b.node), Some(NodeName::new("n1")));
        assert_eq!(moved.new_primary.node, NodeName::new("n2"));
        recording.abort();
    }
}
