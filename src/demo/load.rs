//! A steady load of `incr` stimuli on a set of keys of a key-value unit, driven through one
//! node, recording every stimulus and its outcome in a test kit [`History`]; and the check of
//! the final values against the acknowledged increments. `understudy demo`, `understudy load`
//! and the process tests run it.

use crate::testkit::{History, Outcome, PrimaryCheck};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use understudy_cluster::probe::{Probe, ProbeError};
use understudy_runtime::NodeName;

/// Most stimuli in flight at once; beyond that the load sheds (and counts it).
const MAX_IN_FLIGHT: usize = 512;

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    shed: AtomicU64,
    in_flight: AtomicU64,
}

/// How many failure reasons a load keeps, for the report.
const KEPT_FAILURES: usize = 20;

/// What a finished load counted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LoadTotals {
    /// Stimuli sent.
    pub stimuli_sent: u64,
    /// Answered with a result.
    pub answered_ok: u64,
    /// Answered with a result within `T_max` of being sent.
    pub within_t_max: u64,
    /// Reported as ignored by the unit.
    pub ignored: u64,
    /// Failed otherwise (budget ran out, unit unavailable).
    pub failed: u64,
    /// Of those, failed before their `T_max` had run out (a caller should never see that).
    pub failed_before_t_max: u64,
    /// Stimuli whose outcome (answer or error) came after their `T_max`.
    pub missed_t_max: u64,
    /// The first few failures: what the caller was told, and after how long.
    pub first_failures: Vec<String>,
    /// Not sent because too many were already in flight.
    pub shed: u64,
    /// Acknowledged increments per key.
    pub acked: Vec<u64>,
    /// Who answered: one primary per epoch, one epoch after another.
    pub primaries: PrimaryCheck,
}

/// A running load.
#[derive(Debug)]
pub struct IncrLoad {
    counters: Arc<Counters>,
    history: Arc<History>,
    acked: Arc<Mutex<Vec<u64>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

/// The name of key `k` of a load whose keys start with `prefix`.
pub fn key(prefix: &str, k: usize) -> String {
    format!("{prefix}{k}")
}

impl IncrLoad {
    /// Send `rate` increments per second to `unit` through `via`, spread over `keys` keys
    /// named `prefix0`, `prefix1`, ….
    pub fn start(
        probe: Arc<Probe>,
        via: NodeName,
        unit: &str,
        prefix: &str,
        keys: usize,
        rate: u32,
        t_max: Duration,
    ) -> IncrLoad {
        let counters = Arc::new(Counters::default());
        let history = History::new();
        let acked = Arc::new(Mutex::new(vec![0u64; keys.max(1)]));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(drive(
            probe,
            via,
            unit.to_string(),
            prefix.to_string(),
            keys.max(1),
            rate,
            t_max,
            counters.clone(),
            history.clone(),
            acked.clone(),
            stop.clone(),
        ));
        IncrLoad {
            counters,
            history,
            acked,
            stop,
            task,
        }
    }

    /// Stop sending, wait for every stimulus in flight, and return the counts.
    pub async fn finish(self) -> LoadTotals {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        let c = self.history.counts();
        let first_failures = self
            .history
            .records()
            .into_iter()
            .filter_map(|r| match r.outcome {
                Outcome::Failed(e) => Some(format!("{e} (after {:?})", r.took)),
                _ => None,
            })
            .take(KEPT_FAILURES)
            .collect();
        LoadTotals {
            stimuli_sent: self.counters.sent.load(Ordering::SeqCst),
            answered_ok: c.answered,
            within_t_max: c.answered - c.answered_late,
            ignored: c.ignored,
            failed: c.failed,
            failed_before_t_max: c.failed_early,
            missed_t_max: c.late,
            first_failures,
            shed: self.counters.shed.load(Ordering::SeqCst),
            acked: self.acked.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            primaries: self.history.check_primaries(),
        }
    }

    /// Increments acknowledged so far.
    pub fn answered_ok(&self) -> u64 {
        self.history.counts().answered
    }

    /// Every stimulus sent so far and its outcome.
    pub fn history(&self) -> &Arc<History> {
        &self.history
    }

    /// Print the live progress line (to stderr).
    pub fn progress(&self, started: Instant, faults: usize) {
        progress(&self.counters, &self.history, started, faults);
    }
}

/// Read every key through `via` and compare with the acknowledged increments: (lost,
/// duplicates).
pub async fn verify(
    probe: &Probe,
    via: &NodeName,
    unit: &str,
    prefix: &str,
    acked: &[u64],
) -> Result<(u64, u64), ProbeError> {
    let mut lost = 0u64;
    let mut duplicates = 0u64;
    for (k, want) in acked.iter().enumerate() {
        let json = format!(r#"{{"Get":{{"key":"{}"}}}}"#, key(prefix, k));
        let got = probe.call_json(via, unit, &json, None).await?;
        let value = parse_value(&got).ok_or_else(|| ProbeError::NoAnswer {
            node: via.clone(),
            reason: format!("unexpected answer {got}"),
        })?;
        lost += want.saturating_sub(value);
        duplicates += value.saturating_sub(*want);
    }
    Ok((lost, duplicates))
}

/// `{"Value":"12"}` → 12; a key never written counts 0.
pub fn parse_value(answer: &str) -> Option<u64> {
    if answer == r#"{"Value":null}"# {
        return Some(0);
    }
    answer
        .strip_prefix(r#"{"Value":""#)?
        .strip_suffix(r#""}"#)?
        .parse()
        .ok()
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    probe: Arc<Probe>,
    via: NodeName,
    unit: String,
    prefix: String,
    keys: usize,
    rate: u32,
    t_max: Duration,
    counters: Arc<Counters>,
    history: Arc<History>,
    acked: Arc<Mutex<Vec<u64>>>,
    stop: Arc<AtomicBool>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let per_tick = (f64::from(rate) / 100.0).max(0.0);
    let mut owed = 0.0f64;
    let mut n = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::SeqCst) {
        tick.tick().await;
        owed += per_tick;
        while owed >= 1.0 {
            owed -= 1.0;
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                counters.shed.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let key = n % keys;
            n += 1;
            let (probe, via, counters, history, acked, unit) = (
                probe.clone(),
                via.clone(),
                counters.clone(),
                history.clone(),
                acked.clone(),
                unit.clone(),
            );
            let name = self::key(&prefix, key);
            counters.sent.fetch_add(1, Ordering::Relaxed);
            counters.in_flight.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let json = format!(r#"{{"Incr":{{"key":"{name}","by":1}}}}"#);
                let sent = Instant::now();
                let (outcome, served_by) = match probe
                    .call_json_served(&via, &unit, &json, Some(t_max))
                    .await
                {
                    Ok(answer) if answer.json.contains("Counter") => {
                        acked.lock().unwrap_or_else(|p| p.into_inner())[key] += 1;
                        (Outcome::Answered(answer.json), Some(answer.served_by))
                    }
                    Ok(answer) => (Outcome::Failed(format!("answer {}", answer.json)), None),
                    Err(e) if e.to_string().contains("ignored") => {
                        (Outcome::Ignored(e.to_string()), None)
                    }
                    Err(e) => (Outcome::Failed(e.to_string()), None),
                };
                history.record_served(format!("incr {name}"), sent, t_max, outcome, served_by);
                counters.in_flight.fetch_sub(1, Ordering::Relaxed);
                drop(permit);
            });
        }
    }
    // Wait for every stimulus still in flight.
    let _ = slots.acquire_many(MAX_IN_FLIGHT as u32).await;
}

fn progress(c: &Counters, h: &History, started: Instant, faults: usize) {
    let counts = h.counts();
    use std::io::Write;
    eprint!(
        "\r[{:5.1}s] sent {:>8}  ok {:>8}  in flight {:>4}  failed {:>3}  faults {:>2}",
        started.elapsed().as_secs_f64(),
        c.sent.load(Ordering::Relaxed),
        counts.answered,
        c.in_flight.load(Ordering::Relaxed),
        counts.failed,
        faults
    );
    let _ = std::io::stderr().flush();
}
