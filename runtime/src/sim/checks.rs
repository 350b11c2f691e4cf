//! One checker per invariant of DESIGN.md §2. The event loop calls them after every step with
//! what the step touched; each returns the first violation it sees.
//!
//! The checks are incremental but exact: a copy's state changes only when it steps, a lease
//! only lapses (it is extended only by a step), and the acknowledged tags only grow, so
//! checking what a step touched is the same as checking everything after it.

use super::unit::{SetResponse, SetState, SetUnit};
use super::world::SimCopy;
use crate::copy::{CopyCore, Role};
use crate::group::{GroupCore, Phase, StandbyState, UnitRecord};
use crate::ids::{BatchSeq, CopyId, Epoch};
use crate::message::Refusal;
use crate::time::Time;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The invariants the simulation checks, numbered as in DESIGN.md §2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Invariant {
    /// §2.1: per unit and epoch at most one copy ever takes the primary role; at any instant
    /// at most one copy serves (primary with a live lease); all answers of an epoch come from
    /// one copy.
    OnePrimaryPerEpoch,
    /// §2.2: a unit's primary and standby never share a node.
    PrimaryAndStandbyNeverShareANode,
    /// §2.3: every serving copy holds every acknowledged `Add`; a `Read` sees every `Add`
    /// acknowledged before it was first sent; the final primary holds them all.
    NoAcknowledgedStimulusLost,
    /// §2.4: no `Add` is counted more than once in any copy's state.
    NoStimulusTakesEffectTwice,
    /// §2.5: a standby's state is exactly its primary's state at a batch boundary; no copy
    /// holds half an `Add`.
    StandbyAppliesOnlyWholeBatches,
    /// §2.6: a client is failed only when its deadline runs out or the unit is declared
    /// unavailable; a unit is never left without a primary and without being declared
    /// unavailable.
    ClientsRedirectedNotFailed,
}

impl Invariant {
    /// Its number in DESIGN.md §2.
    pub fn number(self) -> u8 {
        match self {
            Invariant::OnePrimaryPerEpoch => 1,
            Invariant::PrimaryAndStandbyNeverShareANode => 2,
            Invariant::NoAcknowledgedStimulusLost => 3,
            Invariant::NoStimulusTakesEffectTwice => 4,
            Invariant::StandbyAppliesOnlyWholeBatches => 5,
            Invariant::ClientsRedirectedNotFailed => 6,
        }
    }

    /// Its name, in words.
    pub fn name(self) -> &'static str {
        match self {
            Invariant::OnePrimaryPerEpoch => "one primary per epoch",
            Invariant::PrimaryAndStandbyNeverShareANode => "primary and standby never share a node",
            Invariant::NoAcknowledgedStimulusLost => "no acknowledged stimulus is lost",
            Invariant::NoStimulusTakesEffectTwice => "no stimulus takes effect twice",
            Invariant::StandbyAppliesOnlyWholeBatches => "a standby applies only whole batches",
            Invariant::ClientsRedirectedNotFailed => "clients are redirected, not failed",
        }
    }
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "§2.{} {}", self.number(), self.name())
    }
}

/// A broken invariant and what showed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Violation {
    pub(crate) invariant: Invariant,
    pub(crate) detail: String,
}

fn violated(invariant: Invariant, detail: String) -> Result<(), Violation> {
    Err(Violation { invariant, detail })
}

/// What the checkers remember across steps.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    /// Per (unit, epoch), the copy that took the primary role.
    primaries: BTreeMap<(usize, Epoch), CopyId>,
    /// Per (unit, epoch), the copy that answered.
    responders: BTreeMap<(usize, Epoch), CopyId>,
    /// Per unit, the acknowledged tags in the order their answers left a primary.
    acked_order: Vec<Vec<(u64, Time)>>,
    /// Per unit, the acknowledged tags.
    acked: Vec<BTreeSet<u64>>,
    /// The state of each primary when it sealed each batch (or snapshot).
    sealed: BTreeMap<(CopyId, BatchSeq), SetState>,
}

impl Ledger {
    pub(crate) fn new(units: usize) -> Self {
        Ledger {
            acked_order: vec![Vec::new(); units],
            acked: vec![BTreeSet::new(); units],
            ..Ledger::default()
        }
    }

    /// Remember that the answer of `Add(tag)` left a primary at `now`. Returns whether the tag
    /// is newly acknowledged.
    pub(crate) fn acknowledge(&mut self, unit: usize, tag: u64, now: Time) -> bool {
        let (Some(set), Some(order)) = (self.acked.get_mut(unit), self.acked_order.get_mut(unit))
        else {
            return false;
        };
        if !set.insert(tag) {
            return false;
        }
        order.push((tag, now));
        true
    }

    /// Remember the state of primary `from` as it sealed batch `seq` (first time only).
    pub(crate) fn seal(&mut self, from: CopyId, seq: BatchSeq, state: &SetState) {
        self.sealed
            .entry((from, seq))
            .or_insert_with(|| state.clone());
    }

    /// How many tags of `unit` were acknowledged.
    pub(crate) fn acked_count(&self, unit: usize) -> usize {
        self.acked.get(unit).map_or(0, BTreeSet::len)
    }
}

/// §2.1, after `copy` stepped: it is the only copy ever in the primary role at its epoch, and
/// if it serves now, no other copy of its unit does.
pub(crate) fn one_primary_per_epoch(
    ledger: &mut Ledger,
    copies: &BTreeMap<CopyId, SimCopy>,
    id: CopyId,
    now: Time,
) -> Result<(), Violation> {
    let Some(copy) = copies.get(&id) else {
        return Ok(());
    };
    let core = &copy.core;
    if matches!(core.role(), Role::Primary | Role::Promoting) {
        let first = *ledger
            .primaries
            .entry((copy.unit, core.epoch()))
            .or_insert(id);
        if first != id {
            return violated(
                Invariant::OnePrimaryPerEpoch,
                format!(
                    "unit {} epoch {}: {id} took the primary role ({:?}) after {first} did",
                    copy.unit,
                    core.epoch(),
                    core.role()
                ),
            );
        }
    }
    if core.is_serving(now) {
        for (other_id, other) in copies {
            if *other_id != id && other.unit == copy.unit && other.core.is_serving(now) {
                return violated(
                    Invariant::OnePrimaryPerEpoch,
                    format!(
                        "unit {}: {id} (epoch {}, lease until {:?}) and {other_id} (epoch {}, \
                         lease until {:?}) both serve at {now}",
                        copy.unit,
                        core.epoch(),
                        core.lease_until(),
                        other.core.epoch(),
                        other.core.lease_until()
                    ),
                );
            }
        }
    }
    Ok(())
}

/// §2.1: every answer given at an epoch comes from the same copy.
pub(crate) fn one_responder_per_epoch(
    ledger: &mut Ledger,
    unit: usize,
    epoch: Epoch,
    id: CopyId,
) -> Result<(), Violation> {
    let first = *ledger.responders.entry((unit, epoch)).or_insert(id);
    if first != id {
        return violated(
            Invariant::OnePrimaryPerEpoch,
            format!("unit {unit} epoch {epoch}: {id} answered a stimulus after {first} did"),
        );
    }
    Ok(())
}

/// §2.2, after the manager stepped: no unit has its primary and standby on one node.
pub(crate) fn primary_and_standby_never_share_a_node(group: &GroupCore) -> Result<(), Violation> {
    for (name, rec) in group.units() {
        if let (Some(p), Some((s, _))) = (&rec.primary, &rec.standby) {
            if p.node == s.node {
                return violated(
                    Invariant::PrimaryAndStandbyNeverShareANode,
                    format!(
                        "unit {name}: primary {} and standby {} both on {}",
                        p.copy, s.copy, p.node
                    ),
                );
            }
        }
    }
    Ok(())
}

/// §2.3: a copy that serves now holds every acknowledged tag of its unit. While a copy is
/// primary its state only grows, so only tags acknowledged since its last check are looked at.
pub(crate) fn no_acknowledged_stimulus_lost(
    ledger: &Ledger,
    id: CopyId,
    copy: &mut SimCopy,
    now: Time,
) -> Result<(), Violation> {
    if copy.core.role() != Role::Primary {
        copy.verified = 0;
        return Ok(());
    }
    if !copy.core.is_serving(now) {
        return Ok(());
    }
    let Some(order) = ledger.acked_order.get(copy.unit) else {
        return Ok(());
    };
    for (tag, at) in order.iter().skip(copy.verified) {
        if copy.core.state().get(tag).copied().unwrap_or(0) == 0 {
            return violated(
                Invariant::NoAcknowledgedStimulusLost,
                format!(
                    "unit {}: {id} serves at epoch {} without tag {tag}, acknowledged at {at}",
                    copy.unit,
                    copy.core.epoch()
                ),
            );
        }
    }
    copy.verified = order.len();
    Ok(())
}

/// §2.3: a `Read` first sent at `first_sent` sees every tag acknowledged before then.
pub(crate) fn read_sees_acknowledged(
    ledger: &Ledger,
    unit: usize,
    first_sent: Time,
    response: &SetResponse,
) -> Result<(), Violation> {
    let SetResponse::Tags(tags) = response else {
        return violated(
            Invariant::NoAcknowledgedStimulusLost,
            format!("unit {unit}: a Read was answered with {response:?}"),
        );
    };
    let Some(order) = ledger.acked_order.get(unit) else {
        return Ok(());
    };
    for (tag, at) in order.iter().take_while(|(_, at)| *at < first_sent) {
        if !tags.contains(tag) {
            return violated(
                Invariant::NoAcknowledgedStimulusLost,
                format!(
                    "unit {unit}: a Read first sent at {first_sent} misses tag {tag}, \
                     acknowledged at {at}"
                ),
            );
        }
    }
    Ok(())
}

/// §2.3 at the end of a run: the unit's final primary holds every acknowledged tag.
pub(crate) fn final_primary_holds_acknowledged(
    ledger: &Ledger,
    unit: usize,
    id: CopyId,
    state: &SetState,
) -> Result<(), Violation> {
    let Some(acked) = ledger.acked.get(unit) else {
        return Ok(());
    };
    if let Some(tag) = acked
        .iter()
        .find(|t| state.get(t).copied().unwrap_or(0) == 0)
    {
        return violated(
            Invariant::NoAcknowledgedStimulusLost,
            format!("unit {unit}: the final primary {id} lacks acknowledged tag {tag}"),
        );
    }
    Ok(())
}

/// §2.4 and §2.5, after `copy` stepped: every `Add` in its state counts its two parts once
/// (more is a stimulus applied twice; one part alone is a torn batch).
pub(crate) fn no_stimulus_takes_effect_twice(id: CopyId, copy: &SimCopy) -> Result<(), Violation> {
    for (tag, count) in copy.core.state() {
        if *count > 2 {
            return violated(
                Invariant::NoStimulusTakesEffectTwice,
                format!(
                    "{id} ({:?}, epoch {}) counts {count} parts of Add({tag}): applied {} times",
                    copy.core.role(),
                    copy.core.epoch(),
                    f64::from(*count) / 2.0
                ),
            );
        }
        if *count == 1 {
            return violated(
                Invariant::StandbyAppliesOnlyWholeBatches,
                format!(
                    "{id} ({:?}, epoch {}) holds half of Add({tag})",
                    copy.core.role(),
                    copy.core.epoch()
                ),
            );
        }
    }
    Ok(())
}

/// §2.5, after `copy` stepped: a standby's state is exactly its primary's state when the
/// primary sealed the batch the standby last applied.
pub(crate) fn standby_applies_only_whole_batches(
    ledger: &Ledger,
    id: CopyId,
    copy: &SimCopy,
) -> Result<(), Violation> {
    if copy.core.role() != Role::Standby {
        return Ok(());
    }
    let Some(primary) = copy.core.primary() else {
        return Ok(());
    };
    let seq = copy.core.applied();
    let Some(expected) = ledger.sealed.get(&(primary, seq)) else {
        return Ok(());
    };
    if expected != copy.core.state() {
        let extra: Vec<_> = copy
            .core
            .state()
            .iter()
            .filter(|(t, n)| expected.get(t) != Some(n))
            .take(5)
            .collect();
        let missing: Vec<_> = expected
            .iter()
            .filter(|(t, n)| copy.core.state().get(t) != Some(n))
            .take(5)
            .collect();
        return violated(
            Invariant::StandbyAppliesOnlyWholeBatches,
            format!(
                "standby {id} at batch {} of {primary}: its state differs from the primary's \
                 when it sealed that batch (standby has {extra:?}, primary had {missing:?})",
                seq.0
            ),
        );
    }
    Ok(())
}

/// §2.6: a refusal a client cannot act on, for a stimulus it still awaits, means it was failed
/// before its deadline although the unit was not declared unavailable.
pub(crate) fn clients_redirected_not_failed(
    refusal: &Refusal,
    what: impl FnOnce() -> String,
) -> Result<(), Violation> {
    if refusal.is_retryable() {
        return Ok(());
    }
    violated(
        Invariant::ClientsRedirectedNotFailed,
        format!("{} was refused for good: {refusal}", what()),
    )
}

/// §2.6: a stimulus whose deadline ran out although its unit was never declared unavailable
/// means its client was failed rather than redirected.
pub(crate) fn deadline_ran_out_only_if_unavailable(
    unit: usize,
    first_sent: Time,
    what: impl FnOnce() -> String,
) -> Result<(), Violation> {
    violated(
        Invariant::ClientsRedirectedNotFailed,
        format!(
            "{}, first sent at {first_sent}, ran out of time although unit {unit} was not \
             declared unavailable",
            what()
        ),
    )
}

/// §2.6 at the end of a run, after the faults stopped and the run settled: a unit that was
/// not declared unavailable serves again from its recorded primary, with a ready standby.
pub(crate) fn unit_recovered(
    unit: usize,
    rec: &UnitRecord,
    id: CopyId,
    primary: &CopyCore<SetUnit>,
    now: Time,
) -> Result<(), Violation> {
    let standby_ready = matches!(rec.standby, Some((_, StandbyState::Ready)));
    if rec.phase != Phase::Serving || !primary.is_serving(now) || !standby_ready {
        return violated(
            Invariant::ClientsRedirectedNotFailed,
            format!(
                "unit {unit} did not recover after the faults stopped: phase {:?}, primary {id} \
                 {:?} serving={}, standby {:?}",
                rec.phase,
                primary.role(),
                primary.is_serving(now),
                rec.standby
            ),
        );
    }
    Ok(())
}
