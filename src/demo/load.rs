//! A steady load driven through one node, recording every stimulus and its outcome in a test
//! kit [`History`]: `incr` stimuli on a set of keys of a key-value unit (or of the first unit
//! of a pipeline), or transfers across a ledger split over two units ([`TransferPlan`]); and
//! the check of the final state against what was acknowledged. `understudy demo`, `understudy
//! load` and the process tests run it.

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
    /// Acknowledged stimuli per slot: increments per key, or transfers per account.
    pub acked: Vec<u64>,
    /// Stimuli per slot whose outcome the caller does not know (failed): they may have taken
    /// effect.
    pub unknown: Vec<u64>,
    /// Who answered: one primary per epoch, one epoch after another.
    pub primaries: PrimaryCheck,
}

impl LoadTotals {
    /// For fault tests: print what the load measured, then assert lost 0, duplicated 0 (as
    /// read back by the caller), no error before `T_max`, and one primary per epoch over
    /// every answer; with `new_epoch` (the answering unit's primary was faulted), also that
    /// the answers span at least two epochs. `what` names the fault in the messages.
    pub fn assert_clean(
        &self,
        what: &str,
        (lost, duplicated): (u64, u64),
        takeover: Duration,
        new_epoch: bool,
    ) {
        println!(
            "{what}: takeover {takeover:?}, sent {}, acknowledged {}, lost {lost}, duplicated {duplicated}, ignored {}, errors {} (before T_max: {}), missed T_max {}, shed {}, {:?}",
            self.stimuli_sent,
            self.answered_ok,
            self.ignored,
            self.failed,
            self.failed_before_t_max,
            self.missed_t_max,
            self.shed,
            self.primaries
        );
        assert_eq!(lost, 0, "{what}: acknowledged stimuli lost");
        assert!(
            self.primaries.holds(),
            "{what}: not one primary per epoch: {:?}",
            self.primaries
        );
        assert!(
            !new_epoch || self.primaries.epochs >= 2,
            "{what}: the answers did not span the takeover: {:?}",
            self.primaries
        );
        assert_eq!(duplicated, 0, "{what}: stimuli applied more than once");
        assert_eq!(
            self.failed_before_t_max, 0,
            "{what}: errors before T_max: {:?}",
            self.first_failures
        );
    }
}

/// What a load sends, stimulus after stimulus, and which answers acknowledge them.
#[derive(Clone, Debug)]
pub enum Stimuli {
    /// `incr` by 1 of the keys `prefix0`, `prefix1`, … in turn; one slot per key. A `Counter`
    /// answer acknowledges it.
    Incr {
        /// The keys' common prefix.
        prefix: String,
        /// How many keys.
        keys: usize,
    },
    /// Transfers of 1 across a split ledger ([`TransferPlan::transfer`]); one slot per account
    /// ([`TransferPlan::accounts`]). `Transferred` acknowledges it.
    Transfers(TransferPlan),
}

/// One stimulus of a load: what it is (for the history), its JSON, and the slots its
/// acknowledgement counts on.
struct Planned {
    what: String,
    json: String,
    slots: Vec<usize>,
}

impl Stimuli {
    fn slots(&self) -> usize {
        match self {
            Stimuli::Incr { keys, .. } => (*keys).max(1),
            Stimuli::Transfers(plan) => plan.accounts().len(),
        }
    }

    /// The `n`-th stimulus.
    fn nth(&self, n: usize) -> Planned {
        match self {
            Stimuli::Incr { prefix, keys } => {
                let k = n % (*keys).max(1);
                let name = key(prefix, k);
                Planned {
                    json: format!(r#"{{"Incr":{{"key":"{name}","by":1}}}}"#),
                    what: format!("incr {name}"),
                    slots: vec![k],
                }
            }
            Stimuli::Transfers(plan) => {
                let (from, to) = plan.transfer(n);
                let accounts = plan.accounts();
                let (f, t) = (&accounts[from].name, &accounts[to].name);
                Planned {
                    json: format!(r#"{{"Transfer":{{"from":"{f}","to":"{t}","amount":1}}}}"#),
                    what: format!("transfer 1 {f}->{t}"),
                    slots: vec![from, to],
                }
            }
        }
    }

    /// Whether `answer` acknowledges the stimulus (anything else leaves its outcome unknown).
    fn acknowledges(&self, answer: &str) -> bool {
        match self {
            Stimuli::Incr { .. } => answer.contains("Counter"),
            Stimuli::Transfers(_) => answer == r#""Transferred""#,
        }
    }
}

/// A running load.
#[derive(Debug)]
pub struct IncrLoad {
    counters: Arc<Counters>,
    history: Arc<History>,
    acked: Arc<Mutex<Vec<u64>>>,
    unknown: Arc<Mutex<Vec<u64>>>,
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
        let stimuli = Stimuli::Incr {
            prefix: prefix.to_string(),
            keys,
        };
        IncrLoad::start_stimuli(probe, via, unit, stimuli, rate, t_max)
    }

    /// Send `rate` of `stimuli` per second to `unit` through `via`.
    pub fn start_stimuli(
        probe: Arc<Probe>,
        via: NodeName,
        unit: &str,
        stimuli: Stimuli,
        rate: u32,
        t_max: Duration,
    ) -> IncrLoad {
        let counters = Arc::new(Counters::default());
        let history = History::new();
        let acked = Arc::new(Mutex::new(vec![0u64; stimuli.slots()]));
        let unknown = Arc::new(Mutex::new(vec![0u64; stimuli.slots()]));
        let stop = Arc::new(AtomicBool::new(false));
        let route = Route {
            probe,
            via,
            unit: unit.to_string(),
            t_max,
        };
        let task = tokio::spawn(drive(
            route,
            stimuli,
            rate,
            Tally {
                counters: counters.clone(),
                history: history.clone(),
                acked: acked.clone(),
                unknown: unknown.clone(),
            },
            stop.clone(),
        ));
        IncrLoad {
            counters,
            history,
            acked,
            unknown,
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
            unknown: self
                .unknown
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            primaries: self.history.check_primaries(),
        }
    }

    /// Increments acknowledged so far.
    pub fn answered_ok(&self) -> u64 {
        self.history.counts().answered
    }

    /// Waits until `n` stimuli in all are acknowledged, polling every 10 ms: `false` if that
    /// has not happened within `limit`.
    pub async fn until_answered(&self, n: u64, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.answered_ok() < n {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await; // poll with a deadline
        }
        true
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

/// One account of a [`TransferPlan`]: the ledger unit holding it, its name, and which way
/// the load moves it (each account only ever loses money or only ever gains it, so its
/// balance tells how many transfers touched it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Account {
    /// The ledger unit that holds it.
    pub unit: String,
    /// Its name.
    pub name: String,
    /// The load only debits it (else it only credits it).
    pub debited: bool,
}

/// Transfers of 1 across a ledger split over two units, all sent to the first (`local`, whose
/// peer is `remote`): per pair `i`, `{local}-out-i` (in `local`) pays `{remote}-in-i` (in
/// `remote`: a `Deposit` call), and `{remote}-out-i` pays `{local}-in-i` (a `Withdraw` call),
/// the pairs and directions in turn. Every account opens with `opening`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferPlan {
    /// The ledger unit the transfers are sent to.
    pub local: String,
    /// Its peer, which holds the other half of the accounts.
    pub remote: String,
    /// Pairs of accounts per direction.
    pub pairs: usize,
    /// Every account's opening balance (more than the load can take out of it).
    pub opening: i64,
}

impl TransferPlan {
    /// The accounts, in slot order: per pair, `local`-out, `remote`-in, `remote`-out,
    /// `local`-in.
    pub fn accounts(&self) -> Vec<Account> {
        let account = |unit: &str, way: &str, i: usize, debited: bool| Account {
            unit: unit.to_string(),
            name: format!("{unit}-{way}-{i}"),
            debited,
        };
        (0..self.pairs.max(1))
            .flat_map(|i| {
                [
                    account(&self.local, "out", i, true),
                    account(&self.remote, "in", i, false),
                    account(&self.remote, "out", i, true),
                    account(&self.local, "in", i, false),
                ]
            })
            .collect()
    }

    /// The `n`-th transfer: the slots of the account debited and of the account credited.
    pub fn transfer(&self, n: usize) -> (usize, usize) {
        let base = 4 * ((n / 2) % self.pairs.max(1));
        match n % 2 {
            0 => (base, base + 1),
            _ => (base + 2, base + 3),
        }
    }

    /// Open every account through `via` (an account already there, from a retried open, is
    /// fine).
    pub async fn open(
        &self,
        probe: &Probe,
        via: &NodeName,
        t_max: Duration,
    ) -> Result<(), ProbeError> {
        for a in self.accounts() {
            let json = format!(
                r#"{{"Open":{{"account":"{}","balance":{}}}}}"#,
                a.name, self.opening
            );
            let got = probe.call_json(via, &a.unit, &json, Some(t_max)).await?;
            if got != r#""Opened""# && !got.contains("exists") {
                return Err(unexpected(via, &got));
            }
        }
        Ok(())
    }

    /// The sum of every balance of both units.
    pub async fn total(&self, probe: &Probe, via: &NodeName) -> Result<i64, ProbeError> {
        let mut sum = 0;
        for unit in [&self.local, &self.remote] {
            sum += amount(probe, via, unit, r#""Total""#).await?;
        }
        Ok(sum)
    }

    /// Read every balance through `via` and compare how far each account moved with the
    /// transfers acknowledged on it (`acked`, per slot) and those whose outcome is unknown
    /// (`unknown`): (lost, duplicates) — acknowledged debits or credits missing, and debits
    /// or credits beyond every transfer that could have made them. With no outcome unknown,
    /// both 0 means every balance is its opening plus its acknowledged transfers exactly.
    pub async fn verify(
        &self,
        probe: &Probe,
        via: &NodeName,
        acked: &[u64],
        unknown: &[u64],
    ) -> Result<(u64, u64), ProbeError> {
        let mut lost = 0u64;
        let mut duplicates = 0u64;
        for (slot, a) in self.accounts().iter().enumerate() {
            let json = format!(r#"{{"Balance":{{"account":"{}"}}}}"#, a.name);
            let balance = amount(probe, via, &a.unit, &json).await?;
            let moved = if a.debited {
                self.opening - balance
            } else {
                balance - self.opening
            };
            // Moved the wrong way: nothing the load sent does that.
            duplicates += u64::try_from(-moved).unwrap_or(0);
            let moved = u64::try_from(moved).unwrap_or(0);
            let want = acked.get(slot).copied().unwrap_or(0);
            let could = want + unknown.get(slot).copied().unwrap_or(0);
            lost += want.saturating_sub(moved);
            duplicates += moved.saturating_sub(could);
        }
        Ok((lost, duplicates))
    }
}

/// A ledger's `{"Amount":N}` answer to `json`.
async fn amount(probe: &Probe, via: &NodeName, unit: &str, json: &str) -> Result<i64, ProbeError> {
    let got = probe.call_json(via, unit, json, None).await?;
    got.strip_prefix(r#"{"Amount":"#)
        .and_then(|n| n.strip_suffix('}'))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| unexpected(via, &got))
}

fn unexpected(via: &NodeName, answer: &str) -> ProbeError {
    ProbeError::NoAnswer {
        node: via.clone(),
        reason: format!("unexpected answer {answer}"),
    }
}

/// Where a load's stimuli go, and their budget.
#[derive(Clone, Debug)]
struct Route {
    probe: Arc<Probe>,
    via: NodeName,
    unit: String,
    t_max: Duration,
}

/// Where a load's stimuli and outcomes are counted.
#[derive(Clone, Debug)]
struct Tally {
    counters: Arc<Counters>,
    history: Arc<History>,
    acked: Arc<Mutex<Vec<u64>>>,
    unknown: Arc<Mutex<Vec<u64>>>,
}

impl Tally {
    fn count(&self, slots: &[usize], on: &Mutex<Vec<u64>>) {
        let mut per_slot = on.lock().unwrap_or_else(|p| p.into_inner());
        for s in slots {
            per_slot[*s] += 1;
        }
    }
}

async fn drive(route: Route, stimuli: Stimuli, rate: u32, tally: Tally, stop: Arc<AtomicBool>) {
    let stimuli = Arc::new(stimuli);
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
                tally.counters.shed.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let planned = stimuli.nth(n);
            n += 1;
            let (route, stimuli, tally) = (route.clone(), stimuli.clone(), tally.clone());
            tally.counters.sent.fetch_add(1, Ordering::Relaxed);
            tally.counters.in_flight.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let sent = Instant::now();
                let Route {
                    probe,
                    via,
                    unit,
                    t_max,
                } = route;
                let (outcome, served_by) = match probe
                    .call_json_served(&via, &unit, &planned.json, Some(t_max))
                    .await
                {
                    Ok(answer) if stimuli.acknowledges(&answer.json) => {
                        tally.count(&planned.slots, &tally.acked);
                        (Outcome::Answered(answer.json), Some(answer.served_by))
                    }
                    Ok(answer) => {
                        tally.count(&planned.slots, &tally.unknown);
                        (Outcome::Failed(format!("answer {}", answer.json)), None)
                    }
                    Err(e) if e.to_string().contains("ignored") => {
                        (Outcome::Ignored(e.to_string()), None)
                    }
                    Err(e) => {
                        tally.count(&planned.slots, &tally.unknown);
                        (Outcome::Failed(e.to_string()), None)
                    }
                };
                tally
                    .history
                    .record_served(planned.what, sent, t_max, outcome, served_by);
                tally.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
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
