//! The messages the core exchanges: between the two copies of a unit ([`PeerMsg`]), from the
//! group manager to a copy ([`Directive`]), from a copy to the group manager ([`Report`]), and
//! the refusals a client may receive ([`Refusal`]). Every one carries an epoch.

use crate::dedupe::DedupeTable;
use crate::ids::{BatchSeq, ClientId, CopyId, Epoch, Seq, StimulusId, TraceId, UnitName};
use crate::time::Time;
use crate::unit::DependencyChange;
use crate::unit::Unit;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::time::Duration;

/// What travels to the standby, in order, inside a batch.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub enum Entry<U: Unit> {
    /// A served stimulus: its updates and the answer the primary gave, so the standby can
    /// fill its dedupe table. Under in-flight knowledge it is also the stimulus's end.
    Served {
        /// The stimulus.
        id: StimulusId,
        /// The client's low-water mark when it sent the stimulus.
        low_water: Seq,
        /// The state changes, applied in order.
        updates: Vec<U::Update>,
        /// The answer.
        response: U::Response,
    },
    /// In-flight knowledge: a stimulus began (committed before the primary handles it).
    Begun(Begun<U>),
    /// A stimulus that a promoted primary found open and did not act on: retries of it are
    /// refused as ignored.
    Ignored {
        /// The stimulus.
        id: StimulusId,
        /// Its client's low-water mark.
        low_water: Seq,
    },
    /// A unit this unit calls became unavailable or came back: the unit's degraded-mode
    /// updates for it.
    Dependency {
        /// The change.
        change: DependencyChange,
        /// The unit's updates, applied in order.
        updates: Vec<U::Update>,
    },
}

/// A stimulus that began and has not ended, as in-flight knowledge keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Begun<U: Unit> {
    /// The stimulus.
    pub id: StimulusId,
    /// Its client's low-water mark.
    pub low_water: Seq,
    /// The stimulus itself, to serve it again.
    pub body: U::Stimulus,
    /// The thread it belongs to (absent: the thread it began).
    #[serde(default)]
    pub trace: Option<TraceId>,
}

/// Messages between the primary and the standby of one unit.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub enum PeerMsg<U: Unit> {
    /// Primary → standby: part `part` of `parts` of batch `seq`. The standby applies a batch
    /// only when it holds every part, and then all of it at once.
    Replicate {
        /// The primary's epoch.
        epoch: Epoch,
        /// The primary.
        from: CopyId,
        /// The batch.
        seq: BatchSeq,
        /// This part's index, from 0.
        part: u32,
        /// How many parts the batch has.
        parts: u32,
        /// The entries of this part.
        entries: Vec<Entry<U>>,
    },
    /// Primary → new standby: the whole state as of batch `seq`.
    Snapshot {
        /// The primary's epoch.
        epoch: Epoch,
        /// The primary.
        from: CopyId,
        /// The batch the snapshot is current to.
        seq: BatchSeq,
        /// The state.
        state: U::State,
        /// The dedupe table, part of the replicated state.
        dedupe: DedupeTable<U::Response>,
        /// Stimuli begun and not ended (in-flight knowledge), in the order they began.
        open: Vec<Begun<U>>,
        /// The units this unit calls that are unavailable, as its degraded mode knows them.
        deps_down: BTreeSet<UnitName>,
    },
    /// Standby → primary: every batch up to `upto` is applied.
    Ack {
        /// The epoch of the batches acknowledged.
        epoch: Epoch,
        /// The standby.
        from: CopyId,
        /// The last batch applied.
        upto: BatchSeq,
    },
    /// Any copy → a copy whose message carried a stale epoch.
    Refuse {
        /// The current epoch as the refusing copy knows it.
        current: Epoch,
        /// The refusing copy.
        from: CopyId,
    },
}

impl<U: Unit> PeerMsg<U> {
    /// The copy that sent the message.
    pub fn sender(&self) -> CopyId {
        match self {
            PeerMsg::Replicate { from, .. }
            | PeerMsg::Snapshot { from, .. }
            | PeerMsg::Ack { from, .. }
            | PeerMsg::Refuse { from, .. } => *from,
        }
    }

    /// The epoch the message belongs to.
    pub fn epoch(&self) -> Epoch {
        match self {
            PeerMsg::Replicate { epoch, .. }
            | PeerMsg::Snapshot { epoch, .. }
            | PeerMsg::Ack { epoch, .. } => *epoch,
            PeerMsg::Refuse { current, .. } => *current,
        }
    }
}

/// A lease granted with a promotion: it holds on the copy until `from + duration`, `from`
/// being on the clock of the copy's node. The manager takes `from` from the node's last
/// heartbeat it heard before the grant (the node stamps each with its clock), so the copy's
/// count starts before the manager's and ends first, as with a lease the copy asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseGrant {
    /// Where the lease starts, on the copy's node's clock.
    pub from: Time,
    /// How long it runs.
    pub duration: Duration,
}

/// Group manager → copy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Directive {
    /// Become the primary at `epoch` (takeover step 2 committed it), with the first lease
    /// when the manager could grant it in the same step.
    Promote {
        /// The new epoch.
        epoch: Epoch,
        /// The first lease, counted from a moment on the copy's node's own clock that came
        /// before the grant (see [`LeaseGrant`]); `None`: the copy asks for it
        /// ([`Report::Promoted`]) and serves once it is granted.
        lease: Option<LeaseGrant>,
    },
    /// To a primary: replicate to `standby` from now on (a snapshot first), or to nobody.
    /// The manager restates it with every lease, so a lost or overtaken assignment heals.
    /// To the standby itself (naming it): report `StandbyReady` again if it holds a snapshot.
    AssignStandby {
        /// The primary's epoch.
        epoch: Epoch,
        /// The new standby.
        standby: Option<CopyId>,
    },
    /// A lease for `epoch` that the copy asked for at `requested_at` (its own clock); it holds
    /// until `requested_at + duration`.
    Lease {
        /// The epoch the lease is for.
        epoch: Epoch,
        /// When the copy asked, on its own clock (echoed back).
        requested_at: Time,
        /// How long the lease runs from `requested_at`.
        duration: Duration,
    },
    /// Planned switchover: stop taking stimuli (park them), and once everything answered is
    /// acknowledged by the standby, report [`Report::HandedOver`] and stop serving for good.
    HandOver {
        /// The primary's epoch.
        epoch: Epoch,
    },
    /// The copy is stale: the unit is at `current` now. The copy stops serving for good.
    Fence {
        /// The unit's current epoch.
        current: Epoch,
    },
}

/// Copy → group manager.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Report {
    /// The primary asks for (a renewal of) its lease.
    LeaseRequest {
        /// The unit.
        unit: UnitName,
        /// The primary.
        copy: CopyId,
        /// Its epoch.
        epoch: Epoch,
        /// When it asked, on its own clock.
        requested_at: Time,
    },
    /// The copy passed its consistency check at `epoch` and asks for its first lease.
    Promoted {
        /// The unit.
        unit: UnitName,
        /// The new primary.
        copy: CopyId,
        /// Its epoch.
        epoch: Epoch,
        /// When it asked for its lease, on its own clock.
        requested_at: Time,
    },
    /// The standby installed its primary's snapshot and can be promoted.
    StandbyReady {
        /// The unit.
        unit: UnitName,
        /// The standby.
        copy: CopyId,
        /// The epoch of its primary.
        epoch: Epoch,
    },
    /// The copy learned it is stale and stopped serving.
    Fenced {
        /// The unit.
        unit: UnitName,
        /// The fenced copy.
        copy: CopyId,
        /// The epoch it learned.
        current: Epoch,
    },
    /// The primary handed over (planned switchover): it stopped serving, and every answer it
    /// gave is held by `standby`. The standby can be promoted at once.
    HandedOver {
        /// The unit.
        unit: UnitName,
        /// The old primary.
        copy: CopyId,
        /// Its epoch.
        epoch: Epoch,
        /// The standby that holds everything.
        standby: CopyId,
    },
    /// The copy was told to promote but has no state to serve from (it never received a
    /// snapshot).
    CannotPromote {
        /// The unit.
        unit: UnitName,
        /// The copy.
        copy: CopyId,
        /// The epoch it was asked to take.
        epoch: Epoch,
    },
}

/// Why a copy did not serve a stimulus. Each says what the caller does next.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum Refusal {
    /// This copy is not the unit's primary: resolve the unit again (its binding will be at
    /// `epoch` or later) and resend.
    #[error("not the primary (unit is at epoch {epoch}); resolve the unit again and resend")]
    NotPrimary {
        /// The newest epoch this copy knows.
        epoch: Epoch,
    },
    /// The primary's lease lapsed before it could serve the stimulus: resend after a moment;
    /// a takeover may be under way.
    #[error("the primary's lease for epoch {epoch} lapsed; resend, a takeover may be under way")]
    LeaseLapsed {
        /// The primary's epoch.
        epoch: Epoch,
    },
    /// The stimulus is below its client's low-water mark: the client said it no longer waits
    /// for it. Nothing was applied; do not resend.
    #[error("stimulus {stimulus} is below its client's low-water mark {low_water}; not applied")]
    Superseded {
        /// The stimulus.
        stimulus: StimulusId,
        /// The client's low-water mark.
        low_water: Seq,
    },
    /// The stimulus took effect, but the unit no longer keeps its answer (its client had too
    /// many answers outstanding behind a slow stimulus). Do not resend; read the unit's state
    /// to learn the outcome.
    #[error("stimulus {stimulus} took effect, but its answer is no longer kept; read the state")]
    AnswerForgotten {
        /// The stimulus.
        stimulus: StimulusId,
    },
    /// The unit forgot this client (see the dedupe table's rule): nothing was applied; start a
    /// new client and send again.
    #[error("the unit forgot client {client:?}; nothing was applied, start a new client")]
    SessionExpired {
        /// The client.
        client: ClientId,
    },
    /// A primary that took over found the stimulus open (begun, not finished) and did not act
    /// on it: it took no effect. Do not resend; decide anew whether to send a new stimulus.
    #[error("stimulus {stimulus} was open at a takeover and was ignored; it took no effect")]
    Ignored {
        /// The stimulus.
        stimulus: StimulusId,
    },
    /// The primary holds too many stimuli it cannot serve yet: back off and resend.
    #[error("the primary is overloaded ({parked} stimuli waiting); back off and resend")]
    Overloaded {
        /// How many stimuli wait.
        parked: usize,
    },
}

impl Refusal {
    /// Whether sending the same stimulus again (to the current primary) may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Refusal::NotPrimary { .. } | Refusal::LeaseLapsed { .. } | Refusal::Overloaded { .. }
        )
    }
}
