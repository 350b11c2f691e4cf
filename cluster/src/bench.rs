//! Load driven from inside a node, for `understudy bench`: a closed loop of `in_flight`
//! workers, each sending its next request as soon as its previous one is answered, against one
//! target for a while after a warm-up, and what the answers took.
//!
//! The load runs in the node asked ([`WireAsk::Bench`](crate::wire::WireAsk::Bench)), so the
//! baseline and the units are measured from the same vantage point over the same transport:
//!
//! ```text
//!  understudy bench ──WireAsk::Bench──► endpoint of the driving node ──spawn──► closed loop
//!                                                                     in_flight workers
//!    baseline: BenchCounterMsg::Incr (a ractor_cluster rpc) ──► BenchCounter on node X
//!    unit:     UnitClient::call_within ──► the unit's primary ──replicate──► its standby
//!  ◄──WireAnswer::Bench(stats)── when the loop ends
//! ```
//!
//! The **baseline** is [`BenchCounter`], a plain ractor actor every node runs: the service of
//! the key-value unit's `incr` (a map of counters, answering the new value) with no
//! replication and no dedupe, reached from another node as any ractor actor is, through a
//! `ractor::pg` group named after its node ([`counter_group`]). A **unit** is called through a
//! typed [`UnitClient`] made on the driving node, its stimulus parsed from JSON once per worker
//! before the loop starts ([`TypedBench`]).

use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr};
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use understudy_actors::budgets::BudgetBook;
use understudy_actors::{Directory, Registry, UnitClient};
use understudy_runtime::{NodeName, Unit, UnitName};

/// The most workers one bench may run.
pub const MAX_IN_FLIGHT: u32 = 1024;

/// The longest a bench may run, warm-up included (bounded traffic).
pub const MAX_BENCH: Duration = Duration::from_secs(120);

/// How long a worker waits for the baseline counter's answer.
const BASELINE_TIMEOUT: Duration = Duration::from_secs(2);

/// The process group under which node `node` advertises its baseline counter.
pub fn counter_group(node: &NodeName) -> String {
    format!("bench-counter:{}", node.0)
}

/// What a bench drives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BenchTarget {
    /// The baseline counter ([`BenchCounter`]) of node `node`.
    Baseline {
        /// The node whose counter is called.
        node: NodeName,
    },
    /// The unit `unit`, called with `stimulus`.
    Unit {
        /// The unit.
        unit: UnitName,
        /// The stimulus, as JSON; every `{worker}` in it is replaced by the worker's number
        /// (so that workers may use keys of their own). Parsed once per worker.
        stimulus: String,
    },
}

impl std::fmt::Display for BenchTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BenchTarget::Baseline { node } => write!(f, "the baseline counter on node {node}"),
            BenchTarget::Unit { unit, .. } => write!(f, "unit {unit}"),
        }
    }
}

/// How a bench runs: how many workers, for how long after how long a warm-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchPlan {
    /// Concurrent workers, each with one request in flight.
    pub in_flight: u32,
    /// Requests answered before this much time has passed are not counted.
    pub warmup: Duration,
    /// How long requests are counted, after the warm-up.
    pub duration: Duration,
}

impl BenchPlan {
    /// A plan, or why it cannot run: at least one worker and at most [`MAX_IN_FLIGHT`], a
    /// measured duration above zero, and at most [`MAX_BENCH`] in all.
    pub fn new(in_flight: u32, warmup: Duration, duration: Duration) -> Result<Self, BenchError> {
        let bad = |reason: String| Err(BenchError::BadPlan { reason });
        if in_flight == 0 || in_flight > MAX_IN_FLIGHT {
            return bad(format!(
                "in_flight {in_flight}: use 1 to {MAX_IN_FLIGHT} workers"
            ));
        }
        if duration.is_zero() {
            return bad("the measured duration is zero".into());
        }
        if warmup + duration > MAX_BENCH {
            return bad(format!(
                "warm-up {warmup:?} plus duration {duration:?} is over {MAX_BENCH:?}"
            ));
        }
        Ok(BenchPlan {
            in_flight,
            warmup,
            duration,
        })
    }
}

/// What a bench measured: the requests answered within the measured window (after the
/// warm-up; a request counts if it was sent and answered inside it) and their latencies, from
/// sending to the answer, as the driving node saw them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BenchStats {
    /// Requests answered in the window.
    pub ops: u64,
    /// The window, in microseconds.
    pub window_us: u64,
    /// Median latency of the answered requests.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Longest.
    pub max_us: u64,
    /// Requests in the window that failed (not counted in `ops`).
    pub errors: u64,
    /// What the first of them said.
    pub first_error: Option<String>,
}

impl BenchStats {
    /// The window, in seconds.
    pub fn seconds(&self) -> f64 {
        self.window_us as f64 / 1e6
    }

    /// Requests answered per second of the window.
    pub fn ops_per_s(&self) -> f64 {
        if self.window_us == 0 {
            return 0.0;
        }
        self.ops as f64 / self.seconds()
    }
}

/// Why a bench measured nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum BenchError {
    /// The plan cannot run: change it as the reason says.
    #[error("bad bench plan: {reason}")]
    BadPlan {
        /// What is wrong.
        reason: String,
    },
    /// The driving node sees no baseline counter of that node: check the name, or wait until
    /// the node is connected.
    #[error("no baseline counter of node {node} is visible from this node (is it connected?)")]
    NoBaseline {
        /// The node named.
        node: NodeName,
    },
    /// The driving node's catalog has no unit of that name.
    #[error("this node knows no unit named {unit}")]
    UnknownUnit {
        /// The unit named.
        unit: UnitName,
    },
    /// The stimulus is not one of the unit's: fix the JSON.
    #[error("not a stimulus of unit {unit}: {reason}")]
    BadStimulus {
        /// The unit.
        unit: UnitName,
        /// Where the JSON does not fit.
        reason: String,
    },
    /// The call made before the warm-up failed, so nothing was measured: the target is not
    /// serving (yet).
    #[error("the first call to {target} failed, nothing measured: {reason}")]
    FirstCallFailed {
        /// The target, in words.
        target: String,
        /// Why the call failed.
        reason: String,
    },
    /// A worker task ended without its counts (it panicked, or the node is stopping).
    #[error("a bench worker ended early: {reason}")]
    Worker {
        /// What the runtime said.
        reason: String,
    },
}

/// The baseline: a plain ractor actor holding a map of counters, one per node (started by
/// `Node::start`), advertised in the process group [`counter_group`] of its node.
#[derive(Debug, Default)]
pub struct BenchCounter;

/// What the baseline counter is asked, from this node or another (over `ractor_cluster`).
#[derive(RactorClusterMessage, Debug)]
pub enum BenchCounterMsg {
    /// Add `by` to the counter named `key` (a missing one counts as 0) and answer its new
    /// value. `by` and the answer are 8 bytes, big-endian (bytes, so that a malformed frame
    /// decodes without a panic); a `by` of another length, or a sum that overflows, is
    /// answered with no bytes and changes nothing.
    #[rpc]
    Incr {
        /// The counter's name.
        key: Vec<u8>,
        /// The amount, as an `i64`.
        by: Vec<u8>,
        /// The new value, as an `i64`.
        reply: RpcReplyPort<Vec<u8>>,
    },
}

impl Actor for BenchCounter {
    type Msg = BenchCounterMsg;
    type State = HashMap<Vec<u8>, i64>;
    type Arguments = NodeName;

    async fn pre_start(
        &self,
        myself: ActorRef<BenchCounterMsg>,
        node: NodeName,
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join(counter_group(&node), vec![myself.get_cell()]);
        Ok(HashMap::new())
    }

    async fn handle(
        &self,
        _myself: ActorRef<BenchCounterMsg>,
        msg: BenchCounterMsg,
        counters: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            BenchCounterMsg::Incr { key, by, reply } => {
                let by = <[u8; 8]>::try_from(by.as_slice()).map(i64::from_be_bytes);
                let counter = counters.entry(key).or_insert(0);
                let answer = match by.ok().and_then(|by| counter.checked_add(by)) {
                    Some(n) => {
                        *counter = n;
                        n.to_be_bytes().to_vec()
                    }
                    None => Vec::new(),
                };
                let _ = reply.send(answer);
            }
        }
        Ok(())
    }
}

/// Starts node `node`'s baseline counter.
pub async fn start_counter(node: &NodeName) -> Result<ActorRef<BenchCounterMsg>, SpawnErr> {
    let (counter, _) = Actor::spawn(None, BenchCounter, node.clone()).await?;
    Ok(counter)
}

/// One increment of the baseline counter `counter`, by 1.
async fn incr_baseline(counter: &ActorRef<BenchCounterMsg>, key: &[u8]) -> Result<(), String> {
    let call = counter.call(
        |reply| BenchCounterMsg::Incr {
            key: key.to_vec(),
            by: 1i64.to_be_bytes().to_vec(),
            reply,
        },
        Some(BASELINE_TIMEOUT),
    );
    match call.await {
        Ok(CallResult::Success(value)) if value.len() == 8 => Ok(()),
        Ok(CallResult::Success(_)) => Err("the counter refused the increment".into()),
        Ok(CallResult::Timeout) => Err(format!("no answer within {BASELINE_TIMEOUT:?}")),
        Ok(CallResult::SenderError) => Err("the counter dropped the request".into()),
        Err(e) => Err(format!("the counter is unreachable: {e}")),
    }
}

/// A boxed future of a bench's outcome.
pub type BenchFuture = Pin<Box<dyn Future<Output = Result<BenchStats, BenchError>> + Send>>;

/// What a node lends a unit bench: the name table, the links and the budget book its own
/// clients use.
#[derive(Clone, Debug)]
pub struct BenchContext {
    /// The node's name table.
    pub registry: Registry,
    /// How the node reaches its peers.
    pub directory: Directory,
    /// The node's book of time spent against budgets (the bench's calls count there, as any
    /// client's of the node do).
    pub budgets: BudgetBook,
}

/// Drives a bench against units of one kind through typed clients: what a node keeps per unit
/// (from the kind registered with `NodeBuilder::kind`), since its endpoint knows no unit type.
pub trait UnitBench: Send + Sync + std::fmt::Debug {
    /// Drive unit `unit` with `stimulus` (JSON; see [`BenchTarget::Unit`]) under `plan`,
    /// through a new typed client of this node.
    fn drive(
        &self,
        unit: UnitName,
        stimulus: &str,
        plan: BenchPlan,
        context: &BenchContext,
    ) -> BenchFuture;

    /// Drive unit `unit` with `stimulus` under `plan`, recording who answered each request
    /// (a closed loop, as [`WireAsk::BenchServed`](crate::wire::WireAsk::BenchServed) says).
    fn drive_served(
        &self,
        unit: UnitName,
        stimulus: &str,
        plan: ServedPlan,
        context: &BenchContext,
    ) -> ServedFuture;
}

/// The units a node can bench, by name.
pub type BenchUnits = BTreeMap<UnitName, Arc<dyn UnitBench>>;

/// The [`UnitBench`] of units of type `U`: a [`UnitClient<U>`] shared by the workers, each
/// with its stimulus parsed once; the loop clones it per call, with no JSON in it.
#[derive(Clone, Debug)]
pub struct TypedBench<U: Unit> {
    unit: U,
}

impl<U: Unit> TypedBench<U> {
    /// The bench of units that behave as `unit`.
    pub fn new(unit: U) -> Self {
        TypedBench { unit }
    }
}

impl<U: Unit> TypedBench<U> {
    /// One stimulus per worker, parsed from `stimulus`, and a typed client of this node.
    #[allow(clippy::type_complexity)]
    fn prepare(
        &self,
        unit: &UnitName,
        stimulus: &str,
        in_flight: u32,
        context: &BenchContext,
    ) -> (Result<Vec<U::Stimulus>, BenchError>, UnitClient<U>) {
        let stimuli = (0..in_flight)
            .map(|worker| {
                let json = stimulus.replace("{worker}", &worker.to_string());
                serde_json::from_str(&json).map_err(|e| BenchError::BadStimulus {
                    unit: unit.clone(),
                    reason: e.to_string(),
                })
            })
            .collect();
        let client = UnitClient::new(
            self.unit.clone(),
            unit.clone(),
            context.registry.clone(),
            context.directory.clone(),
        )
        .with_budgets(context.budgets.clone());
        (stimuli, client)
    }
}

impl<U: Unit> UnitBench for TypedBench<U> {
    fn drive(
        &self,
        unit: UnitName,
        stimulus: &str,
        plan: BenchPlan,
        context: &BenchContext,
    ) -> BenchFuture {
        let (stimuli, client) = self.prepare(&unit, stimulus, plan.in_flight, context);
        Box::pin(async move {
            let stimuli = stimuli?;
            let target = format!("unit {unit}");
            closed_loop(plan, &target, |worker| {
                let client = client.clone();
                let stimulus = stimuli[worker].clone();
                let t_max = client.budget(&stimulus).t_max();
                move || {
                    let (client, stimulus) = (client.clone(), stimulus.clone());
                    async move {
                        match client.call_within(stimulus, t_max).await {
                            Ok(_) => Ok(()),
                            Err(e) => Err(e.to_string()),
                        }
                    }
                }
            })
            .await
        })
    }

    fn drive_served(
        &self,
        unit: UnitName,
        stimulus: &str,
        plan: ServedPlan,
        context: &BenchContext,
    ) -> ServedFuture {
        let (stimuli, client) = self.prepare(&unit, stimulus, plan.in_flight, context);
        Box::pin(async move {
            let stimuli = stimuli?;
            let target = format!("unit {unit}");
            served_loop(plan, &target, |worker| {
                let client = client.clone();
                let stimulus = stimuli[worker].clone();
                let t_max = client.budget(&stimulus).t_max();
                move || {
                    let (client, stimulus) = (client.clone(), stimulus.clone());
                    async move {
                        match client.call_served(stimulus, t_max).await {
                            Ok(served) => Ok((served.served_by.epoch.0, served.served_by.at_us)),
                            Err(e) => Err(e.to_string()),
                        }
                    }
                }
            })
            .await
        })
    }
}

/// Runs a bench on this node: against `target`, under `plan`, with the node's `units` and
/// `context` for a unit target.
pub async fn run(
    target: BenchTarget,
    plan: BenchPlan,
    units: &BenchUnits,
    context: &BenchContext,
) -> Result<BenchStats, BenchError> {
    match target {
        BenchTarget::Baseline { node } => {
            let counter: ActorRef<BenchCounterMsg> = ractor::pg::get_members(&counter_group(&node))
                .into_iter()
                .next()
                .map(ActorRef::from)
                .ok_or_else(|| BenchError::NoBaseline { node: node.clone() })?;
            let target = BenchTarget::Baseline { node }.to_string();
            closed_loop(plan, &target, |worker| {
                let counter = counter.clone();
                let key: Arc<[u8]> = format!("bench-{worker}").into_bytes().into();
                move || {
                    let (counter, key) = (counter.clone(), key.clone());
                    async move { incr_baseline(&counter, &key).await }
                }
            })
            .await
        }
        BenchTarget::Unit { unit, stimulus } => {
            let bench = units
                .get(&unit)
                .ok_or_else(|| BenchError::UnknownUnit { unit: unit.clone() })?;
            bench.drive(unit, &stimulus, plan, context).await
        }
    }
}

/// What one worker counted in the window.
#[derive(Debug, Default)]
struct WorkerTally {
    latencies_us: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

/// The closed loop: one call first (nothing is measured if it fails), then `plan.in_flight`
/// workers, worker `w` calling `worker(w)` again as soon as its previous call is answered,
/// until the window ends; calls sent and answered inside the window are counted.
pub(crate) async fn closed_loop<W, C, Fut>(
    plan: BenchPlan,
    target: &str,
    mut worker: W,
) -> Result<BenchStats, BenchError>
where
    W: FnMut(usize) -> C,
    C: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let mut first = worker(0);
    first()
        .await
        .map_err(|reason| BenchError::FirstCallFailed {
            target: target.to_string(),
            reason,
        })?;
    let start = Instant::now();
    let from = start + plan.warmup;
    let until = from + plan.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..plan.in_flight as usize {
        let mut call = worker(w);
        tasks.spawn(async move {
            let mut tally = WorkerTally::default();
            loop {
                let sent = Instant::now();
                if sent >= until {
                    return tally;
                }
                let outcome = call().await;
                let answered = Instant::now();
                if sent < from || answered > until {
                    continue;
                }
                match outcome {
                    Ok(()) => tally
                        .latencies_us
                        .push(u64::try_from((answered - sent).as_micros()).unwrap_or(u64::MAX)),
                    Err(e) => {
                        tally.errors += 1;
                        tally.first_error.get_or_insert(e);
                    }
                }
            }
        });
    }
    let mut latencies = Vec::new();
    let mut stats = BenchStats {
        window_us: u64::try_from(plan.duration.as_micros()).unwrap_or(u64::MAX),
        ..BenchStats::default()
    };
    while let Some(joined) = tasks.join_next().await {
        let tally = joined.map_err(|e| BenchError::Worker {
            reason: e.to_string(),
        })?;
        latencies.extend(tally.latencies_us);
        stats.errors += tally.errors;
        if stats.first_error.is_none() {
            stats.first_error = tally.first_error;
        }
    }
    latencies.sort_unstable();
    stats.ops = latencies.len() as u64;
    stats.p50_us = nearest_rank(&latencies, 0.50);
    stats.p99_us = nearest_rank(&latencies, 0.99);
    stats.max_us = latencies.last().copied().unwrap_or(0);
    Ok(stats)
}

/// The nearest-rank `q` quantile of sorted values (0 for none).
fn nearest_rank(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Runs a served load on this node against unit `unit`: a closed loop that records who
/// answered each request (see [`WireAsk::BenchServed`](crate::wire::WireAsk::BenchServed)).
pub async fn run_served(
    unit: UnitName,
    stimulus: String,
    plan: ServedPlan,
    units: &BenchUnits,
    context: &BenchContext,
) -> Result<ServedLoad, BenchError> {
    let bench = units
        .get(&unit)
        .ok_or_else(|| BenchError::UnknownUnit { unit: unit.clone() })?;
    bench.drive_served(unit, &stimulus, plan, context).await
}

/// How a served load runs: `in_flight` workers, until `limit` has passed, or until `after_newer`
/// after the first answer at an epoch newer than the first call's, whichever comes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServedPlan {
    /// Concurrent workers, each with one request in flight.
    pub in_flight: u32,
    /// No request is sent after this much time.
    pub limit: Duration,
    /// No request is sent once this much time has passed since the first answer at a newer
    /// epoch than the first call's.
    pub after_newer: Duration,
}

impl ServedPlan {
    /// A plan, or why it cannot run: 1 to [`MAX_IN_FLIGHT`] workers, a limit above zero and at
    /// most [`MAX_BENCH`].
    pub fn new(in_flight: u32, limit: Duration, after_newer: Duration) -> Result<Self, BenchError> {
        let bad = |reason: String| Err(BenchError::BadPlan { reason });
        if in_flight == 0 || in_flight > MAX_IN_FLIGHT {
            return bad(format!(
                "in_flight {in_flight}: use 1 to {MAX_IN_FLIGHT} workers"
            ));
        }
        if limit.is_zero() || limit > MAX_BENCH {
            return bad(format!(
                "limit {limit:?}: use above zero, up to {MAX_BENCH:?}"
            ));
        }
        Ok(ServedPlan {
            in_flight,
            limit,
            after_newer,
        })
    }
}

/// One answered request of a served load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedAnswer {
    /// When it was sent: µs since the Unix epoch, by the driving node's wall clock.
    pub sent_us: u64,
    /// When the copy answered it: µs since the Unix epoch, by the answering node's wall clock
    /// (`ServedBy::at_us`).
    pub at_us: u64,
    /// The epoch it was answered at.
    pub epoch: u64,
}

/// What a served load saw: every request sent, every answer with who-answered-when, and the
/// failures. A closed loop waits for each request's outcome, so `sent` is `answers.len()` plus
/// `errors` unless a worker was lost (`lost()`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedLoad {
    /// The epoch of the call made before the workers started.
    pub first_epoch: u64,
    /// Requests the workers sent.
    pub sent: u64,
    /// Their answers, by `at_us`.
    pub answers: Vec<ServedAnswer>,
    /// Requests that failed.
    pub errors: u64,
    /// What the first of them said.
    pub first_error: Option<String>,
}

impl ServedLoad {
    /// Requests sent with no outcome at all (neither an answer nor an error).
    pub fn lost(&self) -> u64 {
        self.sent
            .saturating_sub(self.answers.len() as u64 + self.errors)
    }
}

/// A boxed future of a served load's outcome.
pub type ServedFuture = Pin<Box<dyn Future<Output = Result<ServedLoad, BenchError>> + Send>>;

/// µs since the Unix epoch, by this process's wall clock.
pub fn wall_us() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
}

#[derive(Debug, Default)]
struct ServedTally {
    sent: u64,
    answers: Vec<ServedAnswer>,
    errors: u64,
    first_error: Option<String>,
}

/// The served closed loop: one call first (its epoch is the first epoch; nothing runs if it
/// fails), then `plan.in_flight` workers, each calling again as soon as its previous call has
/// its outcome, every answer recorded with its epoch and answering time, until the plan stops
/// it. Each call yields the epoch and `at_us` of its answer.
pub(crate) async fn served_loop<W, C, Fut>(
    plan: ServedPlan,
    target: &str,
    mut worker: W,
) -> Result<ServedLoad, BenchError>
where
    W: FnMut(usize) -> C,
    C: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(u64, u64), String>> + Send + 'static,
{
    use std::sync::atomic::{AtomicU64, Ordering};
    let mut first = worker(0);
    let first_sent_us = wall_us();
    let (first_epoch, first_at_us) =
        first()
            .await
            .map_err(|reason| BenchError::FirstCallFailed {
                target: target.to_string(),
                reason,
            })?;
    let start = Instant::now();
    let until = start + plan.limit;
    // µs after `start` of the first answer at a newer epoch (u64::MAX: none yet).
    let newer_at = Arc::new(AtomicU64::new(u64::MAX));
    let after_newer = u64::try_from(plan.after_newer.as_micros()).unwrap_or(u64::MAX);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..plan.in_flight as usize {
        let mut call = worker(w);
        let newer_at = newer_at.clone();
        tasks.spawn(async move {
            let mut tally = ServedTally::default();
            loop {
                let now = Instant::now();
                let since = u64::try_from((now - start).as_micros()).unwrap_or(u64::MAX);
                let newer = newer_at.load(Ordering::SeqCst);
                if now >= until || (newer != u64::MAX && since >= newer.saturating_add(after_newer))
                {
                    return tally;
                }
                let sent_us = wall_us();
                tally.sent += 1;
                match call().await {
                    Ok((epoch, at_us)) => {
                        tally.answers.push(ServedAnswer {
                            sent_us,
                            at_us,
                            epoch,
                        });
                        if epoch > first_epoch {
                            let at = u64::try_from(start.elapsed().as_micros()).unwrap_or(0);
                            newer_at.fetch_min(at, Ordering::SeqCst);
                        }
                    }
                    Err(e) => {
                        tally.errors += 1;
                        tally.first_error.get_or_insert(e);
                    }
                }
            }
        });
    }
    // The first call is one of the load's requests too.
    let mut load = ServedLoad {
        first_epoch,
        sent: 1,
        answers: vec![ServedAnswer {
            sent_us: first_sent_us,
            at_us: first_at_us,
            epoch: first_epoch,
        }],
        ..ServedLoad::default()
    };
    while let Some(joined) = tasks.join_next().await {
        let tally = joined.map_err(|e| BenchError::Worker {
            reason: e.to_string(),
        })?;
        load.sent += tally.sent;
        load.answers.extend(tally.answers);
        load.errors += tally.errors;
        if load.first_error.is_none() {
            load.first_error = tally.first_error;
        }
    }
    load.answers.sort_by_key(|a| a.at_us);
    Ok(load)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(nearest_rank(&v, 0.5), 50);
        assert_eq!(nearest_rank(&v, 0.99), 99);
        assert_eq!(nearest_rank(&[7], 0.99), 7);
        assert_eq!(nearest_rank(&[], 0.5), 0);
    }

    #[test]
    fn a_plan_refuses_no_workers_too_many_or_too_long() {
        let s = Duration::from_secs(1);
        assert!(BenchPlan::new(0, s, s).is_err());
        assert!(BenchPlan::new(MAX_IN_FLIGHT + 1, s, s).is_err());
        assert!(BenchPlan::new(1, s, Duration::ZERO).is_err());
        assert!(BenchPlan::new(1, MAX_BENCH, s).is_err());
        assert!(BenchPlan::new(64, s, s).is_ok());
    }

    #[tokio::test]
    async fn the_closed_loop_keeps_in_flight_calls_open_and_counts_only_the_window() {
        let open = Arc::new(AtomicU64::new(0));
        let most = Arc::new(AtomicU64::new(0));
        let plan = BenchPlan::new(4, Duration::from_millis(30), Duration::from_millis(120))
            .expect("a plan");
        let stats = closed_loop(plan, "a test", |_| {
            let (open, most) = (open.clone(), most.clone());
            move || {
                let (open, most) = (open.clone(), most.clone());
                async move {
                    let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(2)).await; // the call's own work
                    open.fetch_sub(1, Ordering::SeqCst);
                    Ok(())
                }
            }
        })
        .await
        .expect("the loop runs");
        assert_eq!(
            most.load(Ordering::SeqCst),
            4,
            "four workers, one call each"
        );
        assert!(stats.ops > 0 && stats.errors == 0, "{stats:?}");
        assert!(
            stats.p50_us >= 2_000 && stats.p50_us <= stats.p99_us,
            "{stats:?}"
        );
        assert!(stats.p99_us <= stats.max_us);
        // 4 workers over 120 ms of calls of at least 2 ms: at most 240 counted.
        assert!(stats.ops <= 240, "{stats:?}");
        assert_eq!(stats.window_us, 120_000);
    }

    #[tokio::test]
    async fn a_failing_first_call_measures_nothing_and_later_failures_are_counted() {
        let plan = BenchPlan::new(2, Duration::ZERO, Duration::from_millis(20)).expect("a plan");
        let err = closed_loop(plan, "a test", |_| || async { Err("down".to_string()) })
            .await
            .expect_err("the first call fails");
        assert!(matches!(err, BenchError::FirstCallFailed { .. }), "{err}");

        let calls = Arc::new(AtomicU64::new(0));
        let stats = closed_loop(plan, "a test", |_| {
            let calls = calls.clone();
            move || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    tokio::time::sleep(Duration::from_millis(1)).await; // the call's own work
                    if n == 0 {
                        Ok(())
                    } else {
                        Err("refused".to_string())
                    }
                }
            }
        })
        .await
        .expect("the first call succeeds");
        assert_eq!(stats.ops, 0);
        assert!(stats.errors > 0);
        assert_eq!(stats.first_error.as_deref(), Some("refused"));
    }

    #[tokio::test]
    async fn the_served_loop_records_epochs_and_stops_after_a_newer_epoch() {
        let calls = Arc::new(AtomicU64::new(0));
        let plan =
            ServedPlan::new(3, Duration::from_secs(10), Duration::from_millis(20)).expect("a plan");
        let load = served_loop(plan, "a test", |_| {
            let calls = calls.clone();
            move || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    tokio::time::sleep(Duration::from_millis(1)).await; // the call's own work
                                                                        // Epoch 1 for the first 30 calls, then epoch 2.
                    Ok((if n < 30 { 1 } else { 2 }, wall_us()))
                }
            }
        })
        .await
        .expect("the loop runs");
        assert_eq!(load.first_epoch, 1);
        assert_eq!(load.errors, 0);
        assert_eq!(load.lost(), 0);
        assert_eq!(load.sent, load.answers.len() as u64);
        assert!(load.answers.iter().any(|a| a.epoch == 2), "{load:?}");
        assert!(load.answers.windows(2).all(|w| w[0].at_us <= w[1].at_us));
        assert!(ServedPlan::new(0, Duration::from_secs(1), Duration::ZERO).is_err());
        assert!(ServedPlan::new(1, Duration::ZERO, Duration::ZERO).is_err());
    }

    /// The baseline counter takes `BenchCounterMsg::Incr` from other nodes: whatever the
    /// bytes, a message or a refusal comes out of the frame, and the counter answers an
    /// amount that is not 8 bytes, or that overflows, with no bytes and changes nothing.
    #[test]
    fn a_malformed_counter_increment_is_refused_and_changes_nothing() {
        use proptest::prelude::*;
        use ractor::message::SerializedMessage;
        use ractor::Message as _;

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let counter = runtime
            .block_on(start_counter(&NodeName::new("fuzz-counter")))
            .expect("the counter starts");
        let incr = |key: &[u8], by: &[u8]| -> Result<Vec<u8>, TestCaseError> {
            let call = counter.call(
                |reply| BenchCounterMsg::Incr {
                    key: key.to_vec(),
                    by: by.to_vec(),
                    reply,
                },
                Some(Duration::from_secs(5)),
            );
            match runtime.block_on(call) {
                Ok(CallResult::Success(answer)) => Ok(answer),
                other => Err(TestCaseError::fail(format!("{other:?}"))),
            }
        };
        let config = proptest::test_runner::Config {
            cases: 256,
            failure_persistence: None,
            ..proptest::test_runner::Config::default()
        };
        let input = (
            proptest::collection::vec(any::<u8>(), 0..64),
            any::<i64>(),
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..12),
                any::<i64>().prop_map(|n| n.to_be_bytes().to_vec()),
            ],
        );
        let case = AtomicU64::new(0);
        proptest::test_runner::TestRunner::new(config)
            .run(&input, |(args, start, by)| {
                let (tx, _rx) = ractor::concurrency::oneshot::<Vec<u8>>();
                let frame = SerializedMessage::Call {
                    variant: "Incr".into(),
                    args,
                    reply: tx.into(),
                    metadata: None,
                };
                {
                    // Decoding a call spawns the bridge of its reply port.
                    let _inside = runtime.enter();
                    let _ = BenchCounterMsg::deserialize(frame);
                }
                // A counter of its own per case, at `start`.
                let key = case.fetch_add(1, Ordering::SeqCst).to_be_bytes();
                prop_assert_eq!(
                    incr(&key, &start.to_be_bytes())?,
                    start.to_be_bytes().to_vec()
                );
                let answer = incr(&key, &by)?;
                let expected = <[u8; 8]>::try_from(by.as_slice())
                    .ok()
                    .and_then(|by| start.checked_add(i64::from_be_bytes(by)));
                match expected {
                    Some(n) => prop_assert_eq!(answer, n.to_be_bytes().to_vec()),
                    None => {
                        prop_assert!(answer.is_empty(), "{:?}", answer);
                        // Unchanged: adding nothing answers what it held.
                        prop_assert_eq!(
                            incr(&key, &0i64.to_be_bytes())?,
                            start.to_be_bytes().to_vec()
                        );
                    }
                }
                Ok(())
            })
            .expect("every increment is answered as its bytes say");
        counter.stop(None);
    }
}
