//! Takeover of `kv`, measured in the synchronous cluster once its throughput is measured, for
//! four faults in turn ([`Fault`]): `kill -9` of the primary's node, `kill -9` of the node
//! running both the primary and the group manager, `SIGSTOP` of the primary's node, and a
//! panic in the primary's handler.
//!
//! Each trial: wait until `kv` serves with a ready standby and every node is up; put `kv`'s
//! primary where the fault wants it with planned switchovers ([`Fault::CrashManager`]: on the
//! manager's node; a crash or a hang: off it); read `kv`'s counters of the load's keys. Then
//! the node that holds neither of `kv`'s copies (the *driving node*) runs a closed loop of
//! [`IN_FLIGHT`] `incr`s through its own `UnitClient` (`WireAsk::BenchServed`), recording per
//! answer its epoch and the answering node's wall clock (`ServedBy::at_us`). [`LEAD`] after the
//! load was asked for, the bench notes its wall clock and strikes. The load stops sending
//! [`AFTER_NEWER`] after its first answer at a newer epoch, and answers when every request it
//! sent has its outcome.
//!
//! ```text
//!   takeover = (earliest at_us of an answer at an epoch above the one before) − (fault time)
//!   drained  = (latest at_us of an answer to a request sent before the fault) − (fault time)
//! ```
//!
//! Both clocks are this machine's. A trial is **invalid** (reported, not counted) if the load
//! did not start at the epoch before, had no answer before the fault, got no answer at a newer
//! epoch, or if any request failed, had no outcome, or is missing from `kv`'s counters (read
//! again after the load: they must have moved by the answered requests, plus at most the
//! failed ones). Then a crashed or hung node is started again (the test kit starts a seed
//! again with `--join`), and the next trial waits until the cluster is whole again — with
//! exactly one Raft voter per running node, by member id.

use super::wall_us_now;
use serde::Serialize;
use std::time::{Duration, Instant};
use understudy_actors::{NameState, UnitStatus};
use understudy_cluster::bench::{ServedLoad, ServedPlan};
use understudy_cluster::probe::Probe;
use understudy_cluster::wire::WireAsk;
use understudy_runtime::{NodeName, UnitName};

use crate::testkit::{voters_differ, wait_for_unit, ProcessCluster};
use std::collections::BTreeMap;

/// Requests in flight during a trial.
pub const IN_FLIGHT: u32 = 8;

/// How long after asking for the load the primary's node is killed.
pub const LEAD: Duration = Duration::from_millis(150);

/// How long the load goes on after its first answer at a newer epoch.
pub const AFTER_NEWER: Duration = Duration::from_millis(100);

/// The most a trial's load may send for (a takeover slower than that is no takeover).
const LOAD_LIMIT: Duration = Duration::from_secs(5);

/// How long the cluster may take to be whole again after a trial.
const SETTLE: Duration = Duration::from_secs(30);

/// The `incr` of the trials' load, with a key per worker.
const INCR: &str = r#"{"Incr":{"key":"takeover-{worker}","by":1}}"#;

/// What a trial faulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// `kill -9` of the primary's node (not the group manager's).
    Crash,
    /// `kill -9` of the primary's node, which also ran the group manager.
    CrashManager,
    /// `SIGSTOP` of the primary's node (not the group manager's): the process hangs, its
    /// sockets stay open.
    Hang,
    /// A panic inside the primary's handler, at its next stimulus; the node goes on.
    Panic,
}

impl Fault {
    /// Every fault, in the order trials take turns.
    pub const ALL: [Fault; 4] = [Fault::Crash, Fault::CrashManager, Fault::Hang, Fault::Panic];

    /// What the table calls it.
    pub fn describe(self) -> &'static str {
        match self {
            Fault::Crash => "kill -9 of the primary's node",
            Fault::CrashManager => "kill -9 of the primary's and manager's node",
            Fault::Hang => "SIGSTOP of the primary's node",
            Fault::Panic => "panic in the primary's handler",
        }
    }
}

/// One trial.
#[derive(Clone, Debug, Serialize)]
pub struct Trial {
    /// What was faulted.
    pub fault: Fault,
    /// The node faulted (`kv`'s primary's).
    pub faulted: NodeName,
    /// The node the load ran in.
    pub driver: NodeName,
    /// `kv`'s epoch before the kill.
    pub epoch_before: u64,
    /// The epoch of the first answer after it.
    pub epoch_after: Option<u64>,
    /// From the fault to the first answer at a newer epoch.
    pub takeover_ms: Option<f64>,
    /// From the fault until every request sent before it was answered.
    pub drained_ms: Option<f64>,
    /// Requests the load sent.
    pub sent: u64,
    /// Answered.
    pub answered: u64,
    /// Failed.
    pub failed: u64,
    /// With no outcome, or answered but missing from `kv`'s counters.
    pub lost: u64,
    /// How far `kv`'s counters of the load's keys moved.
    pub counters_moved: Option<u64>,
    /// What the first failure said.
    pub first_error: Option<String>,
    /// Why the trial does not count, if it does not.
    pub invalid: Option<String>,
}

impl Trial {
    /// Its takeover time, if it counts.
    pub fn valid_ms(&self) -> Option<f64> {
        self.invalid.is_none().then_some(self.takeover_ms).flatten()
    }
}

/// Every trial of one run, and why the trials stopped early, if they did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TakeoverRun {
    /// Requests in flight during each trial.
    pub in_flight: u32,
    /// Trials asked for, of each fault.
    pub wanted: usize,
    /// Every trial.
    pub trials: Vec<Trial>,
    /// Why the trials stopped before `wanted`.
    pub stopped: Option<String>,
}

/// p50, p99 (nearest rank) and maximum, in ms.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Quantiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

impl Quantiles {
    /// Of some values; `None` for none.
    pub fn of(mut values: Vec<f64>) -> Option<Quantiles> {
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let rank = |q: f64| {
            let r = (q * values.len() as f64).ceil() as usize;
            values[r.clamp(1, values.len()) - 1]
        };
        Some(Quantiles {
            p50: rank(0.5),
            p99: rank(0.99),
            max: values[values.len() - 1],
        })
    }
}

impl TakeoverRun {
    /// The trials of `fault`.
    pub fn of(&self, fault: Fault) -> impl Iterator<Item = &Trial> {
        self.trials.iter().filter(move |t| t.fault == fault)
    }

    /// The takeover times of the valid trials of `fault`.
    pub fn times(&self, fault: Fault) -> Vec<f64> {
        self.of(fault).filter_map(Trial::valid_ms).collect()
    }

    /// Their quantiles.
    pub fn quantiles(&self, fault: Fault) -> Option<Quantiles> {
        Quantiles::of(self.times(fault))
    }

    /// The invalid trials of `fault`.
    pub fn invalid(&self, fault: Fault) -> usize {
        self.of(fault).filter(|t| t.invalid.is_some()).count()
    }
}

/// Runs trials until every fault has `wanted` of them, or the cluster does not come back.
/// Faults take turns; a crash of the manager's node needs `kv`'s primary or standby on the
/// manager's node, and waits for a turn where it is (a crash of another node puts the new
/// standby there, the only node left).
pub async fn run(cluster: &mut ProcessCluster, probe: &Probe, wanted: usize) -> TakeoverRun {
    let mut run = TakeoverRun {
        in_flight: IN_FLIGHT,
        wanted,
        ..TakeoverRun::default()
    };
    let limit = wanted * Fault::ALL.len() * 3;
    let mut turn = 0usize;
    while run.trials.len() < limit {
        let due: Vec<Fault> = Fault::ALL
            .into_iter()
            .filter(|f| run.of(*f).count() < wanted)
            .collect();
        if due.is_empty() {
            break;
        }
        let mut fault = due[turn % due.len()];
        turn += 1;
        let mut outcome = trial(cluster, probe, fault).await;
        if matches!(outcome, Ok(None)) {
            // The manager's node holds neither copy: a crash of another node puts the new
            // standby there (counted as a crash, beyond those asked for if need be).
            fault = Fault::Crash;
            outcome = trial(cluster, probe, fault).await;
        }
        match outcome {
            Ok(None) => {
                run.stopped = Some(format!("no {fault:?} trial could be placed"));
                break;
            }
            Ok(Some(t)) => {
                let what = match (&t.invalid, t.takeover_ms) {
                    (Some(why), _) => format!("INVALID: {why}"),
                    (None, Some(ms)) => format!("takeover {ms:.2} ms"),
                    (None, None) => "no takeover".into(),
                };
                eprintln!(
                    "bench: takeover trial {:>3} ({:?}, {}, load from {}): {what}; sent {}, answered {}, failed {}, lost {}",
                    run.trials.len() + 1,
                    t.fault,
                    t.faulted,
                    t.driver,
                    t.sent,
                    t.answered,
                    t.failed,
                    t.lost
                );
                run.trials.push(t);
            }
            Err(e) => {
                eprintln!("bench: takeover trials stopped: {e}");
                run.stopped = Some(e);
                break;
            }
        }
    }
    run
}

/// Puts `kv`'s primary where `fault` wants it — on the group manager's node for
/// [`Fault::CrashManager`], off it for a crash or a hang, anywhere for a panic — with planned
/// switchovers. `Ok(None)`: not possible now (the manager's node holds neither copy).
async fn place_for(
    probe: &Probe,
    observer: &NodeName,
    fault: Fault,
) -> Result<Option<(UnitStatus, NodeName)>, String> {
    let kv = UnitName::new("kv");
    let mut at = wait_for_unit(probe, observer, "kv", 0, SETTLE)
        .await
        .ok_or("kv does not serve with a ready standby")?;
    let manager = probe.manager_node().await.map_err(|e| e.to_string())?;
    for _ in 0..3 {
        let primary = at.primary.as_ref().map(|(_, n)| n.clone());
        let standby = at.standby.as_ref().map(|(_, n)| n.clone());
        let placed = match fault {
            Fault::CrashManager => primary.as_ref() == Some(&manager),
            Fault::Crash | Fault::Hang => primary.is_some() && primary.as_ref() != Some(&manager),
            Fault::Panic => primary.is_some(),
        };
        if placed {
            return Ok(Some((at, manager)));
        }
        if fault == Fault::CrashManager && standby.as_ref() != Some(&manager) {
            return Ok(None);
        }
        probe
            .operate(WireAsk::Switchover { unit: kv.clone() })
            .await
            .map_err(|e| format!("cannot move kv's primary: {e}"))?;
        at = wait_for_unit(probe, observer, "kv", at.epoch.0, SETTLE)
            .await
            .ok_or("kv did not serve again after a switchover")?;
    }
    Err(format!(
        "kv's primary is not where a {fault:?} trial needs it after 3 switchovers"
    ))
}

/// One trial of `fault` (see the module's documentation); `Ok(None)` if it cannot run now,
/// `Err` if the cluster is not fit for another.
async fn trial(
    cluster: &mut ProcessCluster,
    probe: &Probe,
    fault: Fault,
) -> Result<Option<Trial>, String> {
    let kv = UnitName::new("kv");
    let nodes = cluster.names();
    // Watch from a node the trial does not fault (placement may change which one that is).
    let observer = |avoid: Option<&NodeName>| {
        nodes
            .iter()
            .map(NodeName::new)
            .find(|n| Some(n) != avoid)
            .unwrap_or_else(|| NodeName::new(cluster.seed()))
    };
    let Some((at, manager)) = place_for(probe, &observer(None), fault).await? else {
        return Ok(None);
    };
    let Some((copy, victim)) = at.primary.clone() else {
        return Err("kv has no primary".into());
    };
    let standby = at.standby.map(|(_, n)| n);
    let driver = driving_node(&nodes, &victim, standby.as_ref());
    let epoch_before = at.epoch.0;
    // The manager may have moved during the placement: what counts is who ran it at the fault.
    let fault = match fault {
        Fault::Crash | Fault::CrashManager if victim == manager => Fault::CrashManager,
        Fault::Crash | Fault::CrashManager => Fault::Crash,
        other => other,
    };
    let before = counters(probe, &driver).await;

    let plan = ServedPlan::new(IN_FLIGHT, LOAD_LIMIT, AFTER_NEWER).map_err(|e| e.to_string())?;
    let load = probe.bench_served(&driver, &kv, INCR, plan);
    let strike = async {
        tokio::time::sleep(LEAD).await; // the load's lead; that it was running is checked below
        let at_us = wall_us_now();
        let struck = match fault {
            Fault::Crash | Fault::CrashManager => {
                cluster.kill9(&victim.0);
                Ok(())
            }
            Fault::Hang => cluster.signal(&victim.0, "STOP").map_err(|e| e.to_string()),
            Fault::Panic => probe
                .inject_panic(&victim, &kv, copy)
                .map_err(|e| e.to_string()),
        };
        (at_us, struck)
    };
    let (load, (fault_us, struck)) = tokio::join!(load, strike);
    struck.map_err(|e| format!("cannot fault {victim} ({fault:?}): {e}"))?;
    let after = counters(probe, &driver).await;

    let mut trial = Trial {
        fault,
        faulted: victim.clone(),
        driver: driver.clone(),
        epoch_before,
        epoch_after: None,
        takeover_ms: None,
        drained_ms: None,
        sent: 0,
        answered: 0,
        failed: 0,
        lost: 0,
        counters_moved: None,
        first_error: None,
        invalid: None,
    };
    match load {
        Ok(load) => judge(&mut trial, &load, fault_us, before.zip(after)),
        Err(e) => trial.invalid = Some(format!("the load failed: {e}")),
    }

    // A hung node is not resumed: killed and started again, as a crashed one, so that every
    // trial starts from a whole cluster of fresh processes alike.
    if fault != Fault::Panic {
        cluster
            .restart(&victim.0)
            .map_err(|e| format!("cannot restart {victim}: {e}"))?;
    }
    settle(probe, &cluster.names(), epoch_before).await?;
    Ok(Some(trial))
}

/// A node that holds neither copy, else one other than the primary's.
pub(crate) fn driving_node(
    nodes: &[String],
    primary: &NodeName,
    standby: Option<&NodeName>,
) -> NodeName {
    let nodes: Vec<NodeName> = nodes.iter().map(NodeName::new).collect();
    nodes
        .iter()
        .find(|n| *n != primary && Some(*n) != standby)
        .or_else(|| nodes.iter().find(|n| *n != primary))
        .unwrap_or(primary)
        .clone()
}

/// Fills in what the load saw, against the kill time and `kv`'s counters before and after.
fn judge(trial: &mut Trial, load: &ServedLoad, kill_us: u64, counters: Option<(u64, u64)>) {
    let ms = |us: u64| us as f64 / 1000.0;
    trial.sent = load.sent;
    trial.answered = load.answers.len() as u64;
    trial.failed = load.errors;
    trial.first_error = load.first_error.clone();
    trial.lost = load.lost();
    let newer = load.answers.iter().find(|a| a.epoch > trial.epoch_before);
    trial.epoch_after = newer.map(|a| a.epoch);
    trial.takeover_ms = newer.map(|a| ms(a.at_us.saturating_sub(kill_us)));
    trial.drained_ms = load
        .answers
        .iter()
        .filter(|a| a.sent_us < kill_us && a.at_us >= kill_us)
        .map(|a| a.at_us - kill_us)
        .max()
        .map(ms);
    if let Some((before, after)) = counters {
        let moved = after.saturating_sub(before);
        trial.counters_moved = Some(moved);
        trial.lost += trial.answered.saturating_sub(moved);
    }
    let before_kill = load
        .answers
        .iter()
        .filter(|a| a.epoch == trial.epoch_before && a.at_us < kill_us)
        .count();
    let moved = trial.counters_moved;
    trial.invalid = if load.first_epoch != trial.epoch_before {
        Some(format!(
            "the load started at epoch {}, not {}",
            load.first_epoch, trial.epoch_before
        ))
    } else if before_kill == 0 {
        Some("no answer before the kill: the load was not running yet".into())
    } else if let Some(a) = newer.filter(|a| a.at_us < kill_us) {
        Some(format!(
            "an answer at epoch {} came before the kill",
            a.epoch
        ))
    } else if newer.is_none() {
        Some(format!("no answer at a newer epoch within {LOAD_LIMIT:?}"))
    } else if trial.failed > 0 {
        Some(format!(
            "{} requests failed: {}",
            trial.failed,
            trial.first_error.as_deref().unwrap_or("?")
        ))
    } else if trial.lost > 0 {
        Some(format!("{} requests lost", trial.lost))
    } else if moved.is_none() {
        Some("kv's counters could not be read".into())
    } else if moved.is_some_and(|m| m > trial.answered + trial.failed) {
        Some(format!(
            "kv's counters moved by {}, beyond the {} requests answered or failed",
            moved.unwrap_or(0),
            trial.answered + trial.failed
        ))
    } else {
        None
    };
}

/// The sum of `kv`'s counters of the load's keys, read through `driver`.
async fn counters(probe: &Probe, driver: &NodeName) -> Option<u64> {
    let mut total = 0;
    for w in 0..IN_FLIGHT {
        let json = format!(r#"{{"Get":{{"key":"takeover-{w}"}}}}"#);
        let answer = probe.call_json(driver, "kv", &json, None).await.ok()?;
        let value: serde_json::Value = serde_json::from_str(&answer).ok()?;
        total += match &value["Value"] {
            serde_json::Value::Null => 0,
            v => v.as_str()?.parse::<u64>().ok()?,
        };
    }
    Some(total)
}

/// Waits until every node answers, counts every node up, knows a leader, sees `kv` serving
/// with a ready standby at an epoch above `epoch_before`, and resolves `kv`.
async fn settle(probe: &Probe, nodes: &[String], epoch_before: u64) -> Result<(), String> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let why = match unsettled(probe, nodes, epoch_before).await {
            None => return Ok(()),
            Some(why) => why,
        };
        if Instant::now() >= deadline {
            return Err(format!("the cluster was not whole after {SETTLE:?}: {why}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await; // poll with a deadline
    }
}

async fn unsettled(probe: &Probe, nodes: &[String], epoch_before: u64) -> Option<String> {
    let mut statuses = Vec::new();
    for name in nodes {
        match probe.status(&NodeName::new(name)).await {
            Ok(s) => statuses.push((name, s)),
            Err(e) => return Some(format!("node {name} does not answer: {e}")),
        }
    }
    let members: BTreeMap<&str, u64> = statuses
        .iter()
        .map(|(name, s)| (name.as_str(), s.control.member))
        .collect();
    for (name, s) in &statuses {
        let view = &s.control;
        if view.leader.is_none() {
            return Some(format!("node {name} knows no leader"));
        }
        if let Some(missing) = nodes
            .iter()
            .find(|n| !view.nodes_up.iter().any(|up| &up.0 == *n))
        {
            return Some(format!("node {name} does not count {missing} up"));
        }
        if let Some(why) = voters_differ(name, view, &members) {
            return Some(why);
        }
        let serving = view.units.iter().any(|u| {
            u.unit.0 == "kv"
                && u.serving
                && u.standby_ready
                && u.primary.is_some()
                && u.epoch.0 > epoch_before
        });
        if !serving {
            let kv: Vec<_> = view.units.iter().filter(|u| u.unit.0 == "kv").collect();
            return Some(format!(
                "node {name} ({}, leader {:?}) does not see kv serving with a ready standby at an epoch above {epoch_before}: {kv:?}", view.role, view.leader
            ));
        }
        let bound = s
            .names
            .iter()
            .any(|(n, state)| n.0 == "kv" && matches!(state, NameState::Bound(_)));
        if !bound {
            return Some(format!("node {name} cannot resolve kv"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use understudy_cluster::bench::ServedAnswer;

    fn trial() -> Trial {
        Trial {
            fault: Fault::Crash,
            faulted: NodeName::new("n2"),
            driver: NodeName::new("n3"),
            epoch_before: 4,
            epoch_after: None,
            takeover_ms: None,
            drained_ms: None,
            sent: 0,
            answered: 0,
            failed: 0,
            lost: 0,
            counters_moved: None,
            first_error: None,
            invalid: None,
        }
    }

    fn answer(sent_us: u64, at_us: u64, epoch: u64) -> ServedAnswer {
        ServedAnswer {
            sent_us,
            at_us,
            epoch,
        }
    }

    #[test]
    fn a_trial_measures_from_the_kill_to_the_first_answer_at_a_newer_epoch() {
        let load = ServedLoad {
            first_epoch: 4,
            sent: 4,
            answers: vec![
                answer(900, 950, 4),
                answer(980, 4_000, 5),
                answer(990, 6_500, 5),
                answer(4_100, 4_200, 5),
            ],
            errors: 0,
            first_error: None,
        };
        let mut t = trial();
        judge(&mut t, &load, 1_000, Some((10, 14)));
        assert_eq!(t.invalid, None);
        assert_eq!(t.takeover_ms, Some(3.0));
        assert_eq!(t.drained_ms, Some(5.5));
        assert_eq!(t.epoch_after, Some(5));
        assert_eq!((t.sent, t.answered, t.lost), (4, 4, 0));

        // A counter that moved by less than the answers: lost, invalid.
        let mut t = trial();
        judge(&mut t, &load, 1_000, Some((10, 13)));
        assert_eq!(t.lost, 1);
        assert!(t.invalid.is_some());

        // A failed request spoils the trial.
        let failed = ServedLoad {
            sent: 5,
            errors: 1,
            first_error: Some("deadline".into()),
            ..load.clone()
        };
        let mut t = trial();
        judge(&mut t, &failed, 1_000, Some((10, 14)));
        assert!(
            t.invalid.as_deref().unwrap_or("").contains("failed"),
            "{t:?}"
        );

        // No newer epoch: no takeover.
        let old = ServedLoad {
            answers: vec![answer(900, 950, 4)],
            sent: 1,
            ..load
        };
        let mut t = trial();
        judge(&mut t, &old, 1_000, Some((0, 1)));
        assert!(t.takeover_ms.is_none() && t.invalid.is_some());
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let q = Quantiles::of((1..=100).map(f64::from).collect()).expect("values");
        assert_eq!((q.p50, q.p99, q.max), (50.0, 99.0, 100.0));
        assert!(Quantiles::of(Vec::new()).is_none());
    }
}
